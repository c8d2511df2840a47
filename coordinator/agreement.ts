// Whether two computations of the same unit agree (issue 12). On the same backend a unit's
// result is a deterministic function of (weights, unit), so they must be bit-identical.
// Across backends rounding differs: every tensor must then be within CROSS_BACKEND_TOLERANCE
// relative L2 distance, the loss sum within the same relative tolerance, and the correct
// count within 1 + 1 % of the samples (a logit near a tie may flip on another backend).
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { gradientFinite } from './guards.js';

export const CROSS_BACKEND_TOLERANCE = 1e-2;

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** ||a − b|| and max(||a||, ||b||), in float64. */
function distance(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  let diff = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return { diff: Math.sqrt(diff), scale: Math.sqrt(Math.max(na, nb)) };
}

function close(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const { diff, scale } = distance(a, b);
  return diff <= CROSS_BACKEND_TOLERANCE * scale + 1e-7;
}

/** Every tensor of a result: gradients, then each batch-norm layer's mean and variance. */
const tensors = (r: GradientResult): Float32Array[] => [...r.grads, ...r.batchStats.flatMap((s) => [s.mean, s.variance])];

const relative = (diff: number, scale: number): number => (diff === 0 ? 0 : scale === 0 ? Infinity : diff / scale);

/**
 * The largest relative difference between two computations of a micro-batch, over the loss
 * sum and every tensor (||a − b|| / max(||a||, ||b||)): what CROSS_BACKEND_TOLERANCE bounds.
 */
export function largestDifference(a: GradientResult, b: GradientResult): number {
  const ta = tensors(a);
  const tb = tensors(b);
  if (ta.length !== tb.length) return Infinity;
  let worst = relative(Math.abs(a.lossSum - b.lossSum), Math.max(Math.abs(a.lossSum), Math.abs(b.lossSum)));
  ta.forEach((t, k) => {
    if (t.length !== tb[k]!.length) worst = Infinity;
    else {
      const { diff, scale } = distance(t, tb[k]!);
      worst = Math.max(worst, relative(diff, scale));
    }
  });
  return worst;
}

const closeNumber = (a: number, b: number): boolean => Math.abs(a - b) <= CROSS_BACKEND_TOLERANCE * Math.max(Math.abs(a), Math.abs(b)) + 1e-6;
const closeCount = (a: number, b: number, count: number): boolean => Math.abs(a - b) <= 1 + 0.01 * count;

export type Agreement = 'agree' | 'disagree' | 'both-non-finite';

export function gradientsAgree(a: GradientResult, b: GradientResult, exact: boolean): Agreement {
  const fa = gradientFinite(a);
  const fb = gradientFinite(b);
  if (!fa && !fb) return 'both-non-finite';
  if (!fa || !fb || a.count !== b.count || a.grads.length !== b.grads.length || a.batchStats.length !== b.batchStats.length) return 'disagree';
  const ta = tensors(a);
  const tb = tensors(b);
  if (exact) return a.lossSum === b.lossSum && a.correct === b.correct && ta.every((t, k) => sameBits(t, tb[k]!)) ? 'agree' : 'disagree';
  return closeNumber(a.lossSum, b.lossSum) && closeCount(a.correct, b.correct, a.count) && ta.every((t, k) => close(t, tb[k]!)) ? 'agree' : 'disagree';
}

export function evaluationsAgree(a: EvalResult, b: EvalResult, exact: boolean): Agreement {
  const fa = Number.isFinite(a.lossSum);
  const fb = Number.isFinite(b.lossSum);
  if (!fa && !fb) return 'both-non-finite';
  if (!fa || !fb || a.count !== b.count) return 'disagree';
  if (exact) return a.lossSum === b.lossSum && a.correct === b.correct ? 'agree' : 'disagree';
  return closeNumber(a.lossSum, b.lossSum) && closeCount(a.correct, b.correct, a.count) ? 'agree' : 'disagree';
}
