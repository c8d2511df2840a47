// Cheap checks on every result before it is used (issue 12). A failed guard does not
// convict a worker: it only sends the unit to be computed again elsewhere. The checks:
// finite values; a loss consistent with the correct count (a wrong answer costs at least
// ln 2 with two classes); batch-norm statistics in a generous range; and a gradient norm
// not far from the recent norms of the model (median and MAD of log norms, after a warm-up).
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { allFinite } from '../shared/tensor-codec.js';

/** Per-sample gradient norm, in float64. */
export function gradientNorm(r: GradientResult): number {
  let sum = 0;
  for (const g of r.grads) for (let i = 0; i < g.length; i++) sum += g[i]! * g[i]!;
  return Math.sqrt(sum) / Math.max(1, r.count);
}

/** The loss and the batch-norm statistics are finite. */
function othersFinite(r: GradientResult): boolean {
  return Number.isFinite(r.lossSum) && r.batchStats.every((s) => allFinite(s.mean) && allFinite(s.variance));
}

/** A result whose values are all finite. */
export function gradientFinite(r: GradientResult): boolean {
  if (!othersFinite(r)) return false;
  return r.grads.every(allFinite);
}

/** With two classes a sample counted wrong has p(true) ≤ 0.5, so it adds at least ln 2 to the loss. */
function lossConsistent(m: { lossSum: number; correct: number; count: number }): boolean {
  return m.lossSum >= (m.count - m.correct) * Math.LN2 * (1 - 1e-4) - 1e-4;
}

/** Batch-norm inputs are convolutions of normalised images: far outside this is corruption. */
const BN_MEAN_LIMIT = 1e4;
const BN_VARIANCE_LIMIT = 1e8;

export interface GuardOptions {
  /** Norms kept (the recent distribution). */
  readonly window: number;
  /** Norms needed before the norm guard judges. */
  readonly warmup: number;
  /** A norm fails when |ln n − median| > max(ln minFactor, madFactor · 1.4826 · MAD). */
  readonly minFactor: number;
  readonly madFactor: number;
}

export const GUARD_DEFAULTS: GuardOptions = { window: 64, warmup: 16, minFactor: 5, madFactor: 6 };

export class Guards {
  private readonly logNorms: number[] = [];
  /** Norms already computed by gradient(), so record() makes no second pass over the gradients. */
  private readonly norms = new WeakMap<GradientResult, number>();
  /** Median and limit of the recent norms, computed once per change (a step's results are all judged before any is recorded). */
  private band: { median: number; limit: number } | undefined;

  constructor(private readonly opts: GuardOptions = GUARD_DEFAULTS) {}

  /** Why `r` fails a guard, or undefined when it passes. */
  gradient(r: GradientResult): string | undefined {
    // One pass over the gradients: their norm is finite exactly when every value is.
    const n = gradientNorm(r);
    this.norms.set(r, n);
    const why = Number.isFinite(n) ? this.checks(r) : 'non-finite values';
    if (why !== undefined) return why;
    if (this.logNorms.length < this.opts.warmup || n === 0) return undefined;
    const { median, limit } = this.band ??= this.recentBand();
    const off = Math.log(n) - median;
    return Math.abs(off) > limit ? `gradient norm ${n.toExponential(3)} is ${Math.exp(Math.abs(off)).toFixed(1)}x ${off > 0 ? 'above' : 'below'} the recent median ${Math.exp(median).toExponential(3)}` : undefined;
  }

  private recentBand(): { median: number; limit: number } {
    const sorted = [...this.logNorms].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1]!;
    const deviations = sorted.map((v) => Math.abs(v - median)).sort((a, b) => a - b);
    const mad = deviations[deviations.length >> 1]!;
    return { median, limit: Math.max(Math.log(this.opts.minFactor), this.opts.madFactor * 1.4826 * mad) };
  }

  /**
   * The guards that hold for a sum of gradients as well (a relay's group sum, `r` with the
   * summed gradient, losses and counts and every part's statistics): all but the norm guard,
   * whose recent distribution is of single micro-batches.
   */
  sum(r: GradientResult): string | undefined {
    // checks() tests the loss and statistics for finiteness: only the gradients are left here.
    return r.grads.every(allFinite) ? this.checks(r) : 'non-finite values';
  }

  /** The guards of sum() other than the gradients' finiteness. */
  private checks(r: GradientResult): string | undefined {
    if (!othersFinite(r)) return 'non-finite values';
    if (!lossConsistent(r)) return `loss sum ${r.lossSum} is too low for ${r.count - r.correct} wrong of ${r.count}`;
    for (const s of r.batchStats) {
      if (s.mean.some((v) => Math.abs(v) > BN_MEAN_LIMIT) || s.variance.some((v) => v > BN_VARIANCE_LIMIT)) return 'batch-norm statistics out of range';
    }
    return undefined;
  }

  /** Adds the norm of a result that is used (passed, or verified) to the recent distribution. */
  record(r: GradientResult): void {
    const n = this.norms.get(r) ?? gradientNorm(r);
    if (!(n > 0) || !Number.isFinite(n)) return;
    this.logNorms.push(Math.log(n));
    this.band = undefined;
    if (this.logNorms.length > this.opts.window) this.logNorms.shift();
  }

  evaluation(r: EvalResult): string | undefined {
    if (!Number.isFinite(r.lossSum)) return 'non-finite loss';
    if (!lossConsistent(r)) return `loss sum ${r.lossSum} is too low for ${r.count - r.correct} wrong of ${r.count}`;
    return undefined;
  }
}
