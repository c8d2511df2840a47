// The images a worker holds, kept across reconnects: a welcome for the same data set (same
// hashes and counts) reuses them, and hello tells the coordinator which ones it has, so they
// are not sent again. What a welcome may make the worker allocate is bounded and checked
// before anything is allocated: a spoofed or broken coordinator cannot make it take gigabytes.
import type { Dataset } from '../shared/data/dataset.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { flagsToBits, type HeldSamples, type WelcomeMessage } from '../shared/protocol.js';
import { SampleStore, storeBytes } from './sample-store.js';

/** What the images a coordinator sends may take by default (--max-data-mb 512). */
export const DEFAULT_MAX_DATA_BYTES = 512 * 2 ** 20;

export type SplitStores = { readonly train: SampleStore; readonly validation: SampleStore };

export class SampleCache {
  private kept: { readonly key: string; readonly hashes: WelcomeMessage['hashes']; readonly stores: SplitStores } | undefined;

  /** @param maxBytes what the shipped samples may take at most */
  constructor(private readonly maxBytes: number) {}

  /** Which shipped images this worker holds, for hello; undefined before the first welcome. */
  held(): HeldSamples | undefined {
    if (!this.kept) return undefined;
    const bits = (store: SampleStore): Uint8Array => flagsToBits(store.arrived() ?? new Uint8Array(0));
    return { hashes: this.kept.hashes, train: bits(this.kept.stores.train), validation: bits(this.kept.stores.validation) };
  }

  /** The stores for the data set `welcome` announces; `local` is the worker's own copy, if any. */
  stores(welcome: WelcomeMessage, local: { train: Dataset; validation: Dataset } | undefined): SplitStores {
    const key = JSON.stringify([welcome.hashes, welcome.counts, welcome.localData]);
    if (this.kept?.key === key) return this.kept.stores;
    this.kept = undefined;
    const shipped = (['train', 'validation'] as const).filter((split) => !welcome.localData[split]);
    const bytes = shipped.reduce((n, split) => n + storeBytes(welcome.counts[split]), 0);
    if (bytes > this.maxBytes) {
      const mb = (b: number): string => (b / 2 ** 20).toFixed(0);
      throw new FlockError(ErrorCode.DATA_TOO_LARGE,
        `the coordinator announces ${welcome.counts.train} training and ${welcome.counts.validation} validation images (${mb(bytes)} MiB to hold), ` +
        `more than this worker's limit of ${mb(this.maxBytes)} MiB; raise --max-data-mb if that coordinator is yours, or check --connect`);
    }
    const store = (split: 'train' | 'validation'): SampleStore => {
      if (!welcome.localData[split]) return SampleStore.empty(welcome.counts[split]);
      if (!local) throw new FlockError(ErrorCode.PROTOCOL, `protocol violation: told to read the ${split} split locally, but this worker has no local data`);
      return SampleStore.local(local[split]);
    };
    const stores = { train: store('train'), validation: store('validation') };
    this.kept = { key, hashes: welcome.hashes, stores };
    return stores;
  }
}
