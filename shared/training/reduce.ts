// Reduction of micro-batch results into one step, always in micro-batch order so the sum
// (and therefore the weights) do not depend on which worker computed what or when.
import type { BatchStats, GradientResult } from '../models/runtime.js';

export interface StepResult {
  /** Mean gradient over the step's samples (without weight decay). */
  readonly grads: Float32Array[];
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  /** Per batch-norm layer: mean and unbiased variance over the whole step. */
  readonly batchStats: { mean: Float32Array; unbiasedVariance: Float32Array }[];
}

/** `results` must be ordered by micro-batch id. */
export function reduceStep(results: readonly GradientResult[]): StepResult {
  const first = results[0];
  if (!first) throw new RangeError('reduceStep: no micro-batch results');
  const grads = first.grads.map((g) => new Float32Array(g.length));
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  for (const r of results) {
    r.grads.forEach((g, k) => {
      const acc = grads[k]!;
      if (g.length !== acc.length) throw new RangeError(`reduceStep: gradient ${k} has ${g.length} values, expected ${acc.length}`);
      for (let i = 0; i < acc.length; i++) acc[i]! += g[i]!;
    });
    lossSum += r.lossSum;
    correct += r.correct;
    count += r.count;
  }
  for (const acc of grads) for (let i = 0; i < acc.length; i++) acc[i]! /= count;
  return { grads, lossSum, correct, count, batchStats: poolBatchStats(results.map((r) => ({ stats: r.batchStats, count: r.count })), count) };
}

/**
 * Pooled mean and variance of the union of the micro-batches, as one process would compute
 * them over the whole batch: mean = Σnᵢmᵢ/N, var = Σnᵢ(vᵢ + (mᵢ − mean)²)/N, then the
 * unbiased N/(N−1) correction that BatchNorm's running variance uses.
 */
export function poolBatchStats(parts: readonly { stats: readonly BatchStats[]; count: number }[], total: number): StepResult['batchStats'] {
  const layers = parts[0]?.stats.length ?? 0;
  const out: StepResult['batchStats'] = [];
  for (let l = 0; l < layers; l++) {
    const channels = parts[0]!.stats[l]!.mean.length;
    const mean = new Float64Array(channels);
    for (const p of parts) {
      const m = p.stats[l]!.mean;
      for (let c = 0; c < channels; c++) mean[c]! += p.count * m[c]!;
    }
    for (let c = 0; c < channels; c++) mean[c]! /= total;
    const variance = new Float64Array(channels);
    for (const p of parts) {
      const { mean: m, variance: v } = p.stats[l]!;
      for (let c = 0; c < channels; c++) variance[c]! += p.count * (v[c]! + (m[c]! - mean[c]!) ** 2);
    }
    const correction = total > 1 ? total / (total - 1) : 1;
    out.push({ mean: Float32Array.from(mean), unbiasedVariance: Float32Array.from(variance, (v) => (v / total) * correction) });
  }
  return out;
}
