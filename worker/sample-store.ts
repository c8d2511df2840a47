// A worker's copy of one split: either its own full dataset (hash matched the coordinator's)
// or the samples the coordinator has shipped so far, stored at their dataset positions.
import { subset, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import type { Batch } from '../shared/models/runtime.js';
import { bytesToIndices, type WireSamples } from '../shared/protocol.js';

/** More images than any split Flock trains on; a larger count in a welcome is refused. */
const MAX_SAMPLES = 1_000_000;

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

  static empty(count: number): SampleStore {
    if (count > MAX_SAMPLES) throw protocol(`dataset of ${count} samples exceeds the ${MAX_SAMPLES} a worker accepts`);
    return new SampleStore({ images: new Uint8Array(count * IMAGE_BYTES), labels: new Uint8Array(count), count }, new Uint8Array(count));
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
