// Which samples of a split one worker already holds. The coordinator is the only source of
// data: each image travels to a worker once per connection, the first time work needs it.
import type { Dataset } from '../shared/data/cifar.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import { indicesToBytes, type WireSamples } from '../shared/protocol.js';

export class SentSamples {
  /** 1 where the worker holds the sample. */
  private readonly held: Uint8Array;

  /** `all`: the worker has its own identical copy (its dataset hash matched). */
  constructor(count: number, all: boolean) {
    this.held = new Uint8Array(count).fill(all ? 1 : 0);
  }

  /** The samples of `lists` the worker lacks, packed for the wire, and marked as held. */
  take(data: Dataset, lists: readonly Uint32Array[]): WireSamples {
    const missing: number[] = [];
    for (const list of lists) {
      for (const i of list) {
        if (this.held[i] === 0) {
          this.held[i] = 1;
          missing.push(i);
        }
      }
    }
    const images = new Uint8Array(missing.length * IMAGE_BYTES);
    const labels = new Uint8Array(missing.length);
    missing.forEach((i, k) => {
      images.set(data.images.subarray(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES), k * IMAGE_BYTES);
      labels[k] = data.labels[i]!;
    });
    return { indices: indicesToBytes(Uint32Array.from(missing)), images, labels };
  }
}
