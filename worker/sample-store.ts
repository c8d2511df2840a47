// A worker's copy of one split: either its own full dataset (hash matched the coordinator's)
// or the samples the coordinator has shipped so far, stored at their dataset positions.
import { subset, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import type { Batch } from '../shared/models/runtime.js';
import { bytesToIndices, type WireSamples } from '../shared/protocol.js';

/** Bytes a store of `count` shipped samples allocates: images, labels and arrival flags. */
export const storeBytes = (count: number): number => count * (IMAGE_BYTES + 2);

function protocol(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

export class SampleStore {
  private constructor(
    private readonly data: Dataset,
    /** 1 where a sample has arrived; undefined when the whole dataset is local. */
    private readonly held: Uint8Array | undefined,
  ) {}

  static local(data: Dataset): SampleStore {
    return new SampleStore(data, undefined);
  }

  /** A store for `count` samples, none arrived yet (the caller bounds `count`, see SampleCache). */
  static empty(count: number): SampleStore {
    return new SampleStore({ images: new Uint8Array(count * IMAGE_BYTES), labels: new Uint8Array(count), count }, new Uint8Array(count));
  }

  /** The split's images and labels (a relay serves its workers from them); only arrived samples are set. */
  dataset(): Dataset {
    return this.data;
  }

  /** One byte per sample, 1 where it has arrived; undefined for a local copy. */
  arrived(): Uint8Array | undefined {
    return this.held;
  }

  add(samples: WireSamples): void {
    const indices = bytesToIndices(samples.indices);
    if (indices.length === 0) return;
    if (!this.held) throw protocol('samples sent for a split this worker reads locally');
    const { images, labels, count } = this.data;
    indices.forEach((i, k) => {
      if (i >= count) throw protocol(`sample index ${i} outside the dataset of ${count}`);
      images.set(samples.images.subarray(k * IMAGE_BYTES, (k + 1) * IMAGE_BYTES), i * IMAGE_BYTES);
      labels[i] = samples.labels[k]!;
      this.held![i] = 1;
    });
  }

  /** The samples at `indices`, in order; each must have arrived already. */
  batch(indices: Uint32Array): Batch {
    for (const i of indices) {
      if (i >= this.data.count || (this.held && this.held[i] !== 1)) throw protocol(`work refers to sample ${i}, which was never sent`);
    }
    return subset(this.data, indices);
  }
}
