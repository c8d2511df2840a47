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
  const sum = new StepSum(results.map((_, i) => i), first.grads.map((g) => g.length), false);
  results.forEach((r, i) => sum.add(i, r));
  return sum.finish();
}

/** A result of the sum whose gradient holds NaN or Infinity; the sum is left as it was. */
export class NotFiniteError extends RangeError {
  constructor(readonly unit: number, readonly tensor: number) {
    super(`gradient ${tensor} of unit ${unit} contains NaN or Infinity`);
  }
}

/** acc += g, element by element in float32; returns false if g held NaN or Infinity (v·0 is NaN only for those). */
function addChecked(acc: Float32Array, g: Float32Array): boolean {
  let z = 0;
  for (let i = 0; i < acc.length; i++) {
    const v = g[i]!;
    acc[i]! += v;
    z += v * 0;
  }
  return z === 0;
}

function finite(g: Float32Array): boolean {
  let z = 0;
  for (let i = 0; i < g.length; i++) z += g[i]! * 0;
  return z === 0;
}

/**
 * The step's gradient sum, built while results arrive: whatever their arrival order, results
 * are added in the canonical order of `ids`, each as soon as all before it are in, so the sum
 * has the same bits as adding them in order at the end (and as reduceStep). With `checked`,
 * a result with a non-finite gradient is refused (NotFiniteError) and leaves the sum as it was;
 * the finiteness check is fused with the addition when the result is next in order.
 */
export class StepSum {
  private readonly acc: Float32Array[];
  private readonly position: Map<number, number>;
  private readonly results: (GradientResult | undefined)[];
  /** Results 0..added-1 (in canonical order) are in `acc`. */
  private added = 0;
  private finished = false;

  constructor(ids: readonly number[], private readonly sizes: readonly number[], private readonly checked: boolean) {
    this.acc = sizes.map((n) => new Float32Array(n));
    this.position = new Map(ids.map((id, i) => [id, i]));
    this.results = ids.map(() => undefined);
  }

  add(id: number, r: GradientResult): void {
    const at = this.position.get(id);
    if (at === undefined) throw new RangeError(`StepSum: unit ${id} is not part of this step`);
    if (this.results[at]) throw new RangeError(`StepSum: unit ${id} was added twice`);
    if (r.grads.length !== this.sizes.length) throw new RangeError(`StepSum: ${r.grads.length} gradient tensors, expected ${this.sizes.length}`);
    r.grads.forEach((g, k) => {
      if (g.length !== this.sizes[k]) throw new RangeError(`StepSum: gradient ${k} has ${g.length} values, expected ${this.sizes[k]}`);
    });
    if (at === this.added) {
      const bad = r.grads.findIndex((g, k) => !addChecked(this.acc[k]!, g) && this.checked);
      if (bad >= 0) {
        this.rebuild();
        throw new NotFiniteError(id, bad);
      }
      this.results[at] = r;
      this.added++;
      this.catchUp();
    } else {
      const bad = this.checked ? r.grads.findIndex((g) => !finite(g)) : -1;
      if (bad >= 0) throw new NotFiniteError(id, bad);
      this.results[at] = r;
    }
  }

  /** The result added for unit `id`, if any. */
  result(id: number): GradientResult | undefined {
    const at = this.position.get(id);
    return at === undefined ? undefined : this.results[at];
  }

  /** The mean gradient and pooled statistics; every unit must have been added. */
  finish(): StepResult {
    if (this.added < this.results.length) throw new RangeError(`StepSum: ${this.results.length - this.added} of ${this.results.length} units missing`);
    if (this.finished) throw new RangeError('StepSum: finished twice');
    this.finished = true;
    const results = this.results as GradientResult[];
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    for (const r of results) {
      lossSum += r.lossSum;
      correct += r.correct;
      count += r.count;
    }
    for (const acc of this.acc) for (let i = 0; i < acc.length; i++) acc[i]! /= count;
    return { grads: this.acc, lossSum, correct, count, batchStats: poolBatchStats(results.map((r) => ({ stats: r.batchStats, count: r.count })), count) };
  }

  /** Adds the results waiting behind the one just added. */
  private catchUp(): void {
    for (let r = this.results[this.added]; r !== undefined && this.added < this.results.length; r = this.results[this.added]) {
      r.grads.forEach((g, k) => addChecked(this.acc[k]!, g));
      this.added++;
    }
  }

  /** The sum of the results before `added`, again, in order (after a refused result touched it). */
  private rebuild(): void {
    for (const acc of this.acc) acc.fill(0);
    for (let i = 0; i < this.added; i++) this.results[i]!.grads.forEach((g, k) => addChecked(this.acc[k]!, g));
  }
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
