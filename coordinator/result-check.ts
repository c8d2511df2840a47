// Model-aware checks of what a worker returns: the protocol layer has already checked
// types; here shapes must match the model, counts the assigned work, and values be finite,
// so no malformed result reaches the coordinator's sum. A finite, well-formed but wrong
// gradient passes these checks; guards.ts and the audits catch those (issue 12). With
// verification on, non-finite values pass here: the guards then have the unit recomputed,
// and two computations that agree on a non-finite result mean the model diverged.
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { batchNormLayers, type ModelSpec } from '../shared/models/spec.js';
import type { EvaluationMessage, GradientMessage } from '../shared/protocol.js';
import { allFinite, bytesToFloat32 } from '../shared/tensor-codec.js';

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

/** @param finiteOnly refuse NaN and ±Infinity (when results are not verified) */
export function checkGradient(m: GradientMessage, model: ModelSpec, expectedCount: number, finiteOnly = true): GradientResult {
  const what = `gradient of micro-batch ${m.microBatch}`;
  counts(m, expectedCount, what, finiteOnly);
  if (m.grads.length !== model.params.length) throw rejected(`${what} has ${m.grads.length} tensors, model ${model.name} has ${model.params.length} parameters`);
  const grads = m.grads.map((g, k) => tensor(g, model.params[k]!.size, `${what}: ${model.params[k]!.name}`, finiteOnly));
  const bn = batchNormLayers(model);
  if (m.batchStats.length !== bn.length) throw rejected(`${what} has statistics for ${m.batchStats.length} batch-norm layers, model has ${bn.length}`);
  const batchStats = m.batchStats.map((s, k) => {
    const layer = bn[k]!;
    const variance = tensor(s.variance, layer.channels, `${what}: ${layer.name} variance`, finiteOnly);
    if (variance.some((v) => v < 0)) throw rejected(`${what}: ${layer.name} has a negative variance`);
    return { mean: tensor(s.mean, layer.channels, `${what}: ${layer.name} mean`, finiteOnly), variance };
  });
  return { grads, lossSum: m.lossSum, correct: m.correct, count: m.count, batchStats };
}

export function checkEvaluation(m: EvaluationMessage, expectedCount: number, finiteOnly = true): EvalResult {
  counts(m, expectedCount, `evaluation of chunk ${m.chunk}`, finiteOnly);
  return { lossSum: m.lossSum, correct: m.correct, count: m.count };
}
