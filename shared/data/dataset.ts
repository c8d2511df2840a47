// A split of the data set in memory, and the one operation workers need on it. Free of
// Node-only imports: the browser worker's bundle includes it (cifar.ts reads files).
import { ErrorCode, FlockError } from '../errors.js';
import { IMAGE_BYTES } from '../models/layers.js';

export interface Dataset {
  /** count * IMAGE_BYTES bytes, NHWC (interleaved RGB). */
  readonly images: Uint8Array;
  /** One label per image: 0 = airplane, 1 = bird. */
  readonly labels: Uint8Array;
  readonly count: number;
}

/** The records at `indices`, in that order, copied into a new dataset. */
export function subset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const count = indices.length;
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Uint8Array(count);
  for (let k = 0; k < count; k++) {
    const i = indices[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= ds.count) {
      throw new FlockError(ErrorCode.BAD_OPTION, `subset: index ${i} (position ${k}) is outside the dataset's 0..${ds.count - 1}; indices must come from the same dataset.`);
    }
    labels[k] = ds.labels[i]!;
    images.set(ds.images.subarray(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES), k * IMAGE_BYTES);
  }
  return { images, labels, count };
}
