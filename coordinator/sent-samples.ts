// Which samples of a split one worker already holds. The coordinator is the only source of
// data: each image travels to a worker the first time work needs it. A worker keeps its
// images across reconnects and says in hello which it holds, so they do not travel again.
import { subset, type Dataset } from '../shared/data/cifar.js';
import { indicesToBytes, type WireSamples } from '../shared/protocol.js';

export class SentSamples {
  /** 1 where the worker holds the sample. */
  private readonly held: Uint8Array;

  /**
   * `all`: the worker has its own identical copy (its dataset hash matched); else `held`, one
   * byte per sample, says which it kept from earlier connections.
   */
  constructor(count: number, all: boolean, held?: Uint8Array) {
    this.held = held && !all ? held : new Uint8Array(count).fill(all ? 1 : 0);
  }

  /** Samples the worker holds. */
  count(): number {
    return this.held.reduce((n, f) => n + f, 0);
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
    const { images, labels } = subset(data, missing);
    return { indices: indicesToBytes(Uint32Array.from(missing)), images, labels };
  }
}
