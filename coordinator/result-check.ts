// Model-aware checks of what a worker returns: the protocol layer has already checked
// types; here shapes must match the model, counts the assigned work, and values be finite,
// so no malformed result reaches the coordinator's sum. A finite, well-formed but wrong
// gradient passes these checks; guards.ts and the audits catch those (issue 12). Gradient
// values are checked for finiteness by the step's sum itself (StepSum, fused with the
// addition): see `notFinite`. With verification on, non-finite values pass (`finiteOnly`
// false, and an unchecked StepSum): the guards then have the unit recomputed, and two
// computations that agree on a non-finite result mean the model diverged.
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { batchNormLayers, type ModelSpec } from '../shared/models/spec.js';
import type { EvaluationMessage, GradientMessage, GroupSumMessage } from '../shared/protocol.js';
import { allFinite, bytesToFloat32, float32Into, halfBytesInto } from '../shared/tensor-codec.js';
import type { WirePrecision } from '../shared/training/config.js';

function rejected(reason: string): FlockError {
  return new FlockError(ErrorCode.BAD_GRADIENT, reason);
}

function tensor(bytes: Uint8Array, size: number, what: string, finiteOnly: boolean): Float32Array {
  if (bytes.byteLength !== size * 4) throw rejected(`${what} has ${bytes.byteLength / 4} values, expected ${size}`);
  const values = bytesToFloat32(bytes);
  if (finiteOnly && !allFinite(values)) throw rejected(`${what} contains NaN or Infinity`);
  return values;
}

function counts(m: { lossSum: number; correct: number; count: number }, expected: number, what: string, finiteOnly: boolean): void {
  if (m.count !== expected) throw rejected(`${what} covers ${m.count} samples, but ${expected} were assigned`);
  if (!(m.correct >= 0 && m.correct <= m.count)) throw rejected(`${what} claims ${m.correct} correct of ${m.count}`);
  if (m.lossSum < 0) throw rejected(`${what} has negative loss ${m.lossSum}`);
  if (finiteOnly && !Number.isFinite(m.lossSum)) throw rejected(`${what} has a non-finite loss ${m.lossSum}`);
}

/**
 * Shapes, counts and batch statistics of a gradient; its tensors are copied once, into `into`
 * (one aligned buffer of the model's parameter count, fresh by default), and NOT checked for
 * finiteness here: the step's sum does that as it adds them (StepSum), and `notFinite` words
 * its refusal.
 */
export function checkGradient(
  m: GradientMessage, model: ModelSpec, expectedCount: number, into: Float32Array = new Float32Array(model.parameterCount), precision: WirePrecision = 'float32', finiteOnly = true,
): GradientResult {
  const what = `gradient of micro-batch ${m.microBatch}`;
  counts(m, expectedCount, what, finiteOnly);
  if (m.half && precision !== 'float16') throw rejected(`${what} is float16, but this run's wire precision is float32 (exact)`);
  const bytes = m.half ? 2 : 4;
  if (m.grads.length !== model.params.length) throw rejected(`${what} has ${m.grads.length} tensors, model ${model.name} has ${model.params.length} parameters`);
  m.grads.forEach((g, k) => {
    const p = model.params[k]!;
    if (g.byteLength !== p.size * bytes) throw rejected(`${what}: ${p.name} has ${g.byteLength / bytes} values, expected ${p.size}`);
  });
  if (into.length !== model.parameterCount) throw new RangeError(`checkGradient: buffer of ${into.length} values for ${model.parameterCount} parameters`);
  let offset = 0;
  const grads = m.grads.map((g, k) => {
    const t = into.subarray(offset, offset + model.params[k]!.size);
    if (m.half) halfBytesInto(g, t);
    else float32Into(g, t);
    offset += t.length;
    return t;
  });
  return { grads, lossSum: m.lossSum, correct: m.correct, count: m.count, batchStats: statsOf(m.batchStats, batchNormLayers(model), what, finiteOnly) };
}

function statsOf(batchStats: GradientMessage['batchStats'], bn: ReturnType<typeof batchNormLayers>, what: string, finiteOnly: boolean): GradientResult['batchStats'] {
  if (batchStats.length !== bn.length) throw rejected(`${what} has statistics for ${batchStats.length} batch-norm layers, model has ${bn.length}`);
  return batchStats.map((s, k) => {
    const layer = bn[k]!;
    const variance = tensor(s.variance, layer.channels, `${what}: ${layer.name} variance`, finiteOnly);
    if (variance.some((v) => v < 0)) throw rejected(`${what}: ${layer.name} has a negative variance`);
    return { mean: tensor(s.mean, layer.channels, `${what}: ${layer.name} mean`, finiteOnly), variance };
  });
}

/**
 * A relay's group sum: the sum's shapes (copied once into `into`; its finiteness is
 * checked by StepSum.addGroup) and each part's counts and statistics, as for a gradient.
 * `expected[i]` is the sample count of the group's i-th micro-batch. The parts come back as
 * results without gradients, by micro-batch id.
 */
export function checkGroupSum(m: GroupSumMessage, model: ModelSpec, expected: readonly number[], into: Float32Array = new Float32Array(model.parameterCount), finiteOnly = true): { sums: Float32Array[]; parts: Map<number, GradientResult> } {
  const what = `sum of group ${m.group}`;
  if (m.grads.length !== model.params.length) throw rejected(`${what} has ${m.grads.length} tensors, model ${model.name} has ${model.params.length} parameters`);
  m.grads.forEach((g, k) => {
    const p = model.params[k]!;
    if (g.byteLength !== p.size * 4) throw rejected(`${what}: ${p.name} has ${g.byteLength / 4} values, expected ${p.size}`);
  });
  let offset = 0;
  const sums = m.grads.map((g) => {
    const t = into.subarray(offset, offset + g.byteLength / 4);
    float32Into(g, t);
    offset += t.length;
    return t;
  });
  const parts = new Map<number, GradientResult>();
  const bn = batchNormLayers(model);
  m.parts.forEach((p, i) => {
    const at = `${what}, micro-batch ${p.microBatch}`;
    counts(p, expected[i]!, at, finiteOnly);
    parts.set(p.microBatch, { grads: [], lossSum: p.lossSum, correct: p.correct, count: p.count, batchStats: statsOf(p.batchStats, bn, at, finiteOnly) });
  });
  return { sums, parts };
}

/** The refusal of a gradient whose tensor `k` holds NaN or Infinity. */
export function notFinite(model: ModelSpec, microBatch: number, k: number): FlockError {
  return rejected(`gradient of micro-batch ${microBatch}: ${model.params[k]?.name ?? `tensor ${k}`} contains NaN or Infinity`);
}

export function checkEvaluation(m: EvaluationMessage, expectedCount: number, finiteOnly = true): EvalResult {
  counts(m, expectedCount, `evaluation of chunk ${m.chunk}`, finiteOnly);
  return { lossSum: m.lossSum, correct: m.correct, count: m.count };
}
