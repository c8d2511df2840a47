// `coordinator evaluate` and `coordinator predict`: a checkpoint, in this process.
import type { ComputeBackend } from '../shared/backend.js';
import type { Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES } from '../shared/models/layers.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec } from '../shared/models/spec.js';
import type { Checkpoint } from './checkpoint.js';

export interface Accuracy {
  readonly loss: number;
  readonly accuracy: number;
  readonly count: number;
}

async function withRuntime<T>(backend: ComputeBackend, checkpoint: Checkpoint, f: (rt: ModelRuntime) => Promise<T>): Promise<T> {
  const rt = new ModelRuntime(backend, modelSpec(checkpoint.config.model));
  try {
    rt.setState(checkpoint.state);
    return await f(rt);
  } finally {
    rt.dispose();
  }
}

/** Evaluation-mode loss and accuracy of a checkpoint on each named dataset. */
export function evaluateCheckpoint<K extends string>(backend: ComputeBackend, checkpoint: Checkpoint, sets: Record<K, Dataset>): Promise<Record<K, Accuracy>> {
  return withRuntime(backend, checkpoint, async (rt) => {
    const out = {} as Record<K, Accuracy>;
    for (const key of Object.keys(sets) as K[]) {
      const r = await rt.evaluate(sets[key]);
      out[key] = { loss: r.lossSum / r.count, accuracy: r.correct / r.count, count: r.count };
    }
    return out;
  });
}

export interface Prediction {
  readonly classIndex: number;
  readonly className: string;
  readonly probabilities: Record<string, number>;
}

/** Predictions for `count` NHWC uint8 images. */
export async function predictImages(backend: ComputeBackend, checkpoint: Checkpoint, images: Uint8Array, count: number): Promise<Prediction[]> {
  if (images.length !== count * IMAGE_BYTES) throw new FlockError(ErrorCode.IMAGE, `expected ${count} images of 32x32x3 bytes, got ${images.length} bytes`);
  const probs = await withRuntime(backend, checkpoint, (rt) => rt.predict(images, count));
  return Array.from({ length: count }, (_, i) => {
    const row = Array.from(probs.subarray(i * NUM_CLASSES, (i + 1) * NUM_CLASSES));
    const classIndex = row.indexOf(Math.max(...row));
    return {
      classIndex,
      className: CLASS_NAMES[classIndex] ?? String(classIndex),
      probabilities: Object.fromEntries(CLASS_NAMES.map((name, k) => [name, row[k] ?? 0])),
    };
  });
}
