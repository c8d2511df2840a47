// Which samples every step and micro-batch covers. Everything derives from (seed, epoch),
// so the coordinator, a resumed coordinator and the in-process trainer cut identical batches
// whatever the number of workers.
import { epochPermutation, mixSeed } from '../random.js';

export interface MicroBatch {
  /** Position within the step: gradients are reduced in this order. */
  readonly id: number;
  /** Indices into the training (or validation) set. */
  readonly indices: Uint32Array;
}

export interface EpochPlan {
  readonly epoch: number;
  readonly stepsPerEpoch: number;
  /** Micro-batches of step `s` (0-based within the epoch). */
  microBatches(stepInEpoch: number): MicroBatch[];
}

/** Splits `indices` into consecutive chunks of at most `size`. */
export function chunk(indices: Uint32Array, size: number): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let start = 0, id = 0; start < indices.length; start += size, id++) {
    out.push({ id, indices: indices.subarray(start, Math.min(start + size, indices.length)) });
  }
  return out;
}

/** drop_last, as the recipe's DataLoader: the incomplete last batch is skipped. */
export function stepsPerEpoch(samples: number, batchSize: number): number {
  return Math.floor(samples / batchSize);
}

export function planEpoch(samples: number, batchSize: number, microBatch: number, seed: number, epoch: number): EpochPlan {
  const perm = epochPermutation(samples, seed, epoch);
  const steps = stepsPerEpoch(samples, batchSize);
  return {
    epoch,
    stepsPerEpoch: steps,
    microBatches(stepInEpoch: number): MicroBatch[] {
      if (stepInEpoch < 0 || stepInEpoch >= steps) throw new RangeError(`step ${stepInEpoch} outside epoch of ${steps} steps`);
      return chunk(perm.subarray(stepInEpoch * batchSize, (stepInEpoch + 1) * batchSize), microBatch);
    },
  };
}

/** Every validation image exactly once, in chunks of `size` (no padding, no duplicates). */
export function validationChunks(samples: number, size: number): MicroBatch[] {
  const all = new Uint32Array(samples);
  for (let i = 0; i < samples; i++) all[i] = i;
  return chunk(all, size);
}

/** Seed of a micro-batch's dropout masks: the same samples get the same masks on any worker. */
export function dropoutSeed(runSeed: number, globalStep: number, microBatchId: number): number {
  return mixSeed(runSeed, 0xd0, globalStep, microBatchId);
}
