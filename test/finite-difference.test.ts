// Finite-difference checks of the gradients workers send: the gradient that ModelRuntime
// computes (tfjs autodiff through Flock's forward pass, with its own closed-form batch-norm
// and channel-sum gradients) against central differences of the same summed loss,
// (L(θ + h·e) − L(θ − h·e)) / 2h, in float32 on a tiny batch. Checked per coordinate (the
// largest gradient entries of every parameter tensor and a random one) and along a random
// direction through all parameters at once, for every model on the cpu backend (stock tfjs
// kernels) and on wasm (Flock's training kernels).
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type * as tfjs from '@tensorflow/tfjs';
import type { BackendName, ComputeBackend } from '../shared/backend.js';
import { forward } from '../shared/models/forward.js';
import { dropoutChannels, dropoutMasks, normalizeImages } from '../shared/models/inputs.js';
import { IMAGE_BYTES, IMAGE_CHANNELS, IMAGE_SIZE, NUM_CLASSES, type ModelName } from '../shared/models/layers.js';
import { ModelRuntime, type Batch, type GradientResult } from '../shared/models/runtime.js';
import { initialState, modelSpec, type ModelSpec, type ModelState } from '../shared/models/spec.js';
import { Rng } from '../shared/random.js';
import { backend as loadTestBackend } from './helpers.js';

/**
 * Step of the per-coordinate differences. Float32 rounding of the loss (~1e-6) limits how small
 * it can be; max pooling limits how large: a step that moves another entry of a pooling window
 * past the maximum crosses a kink.
 */
const H = 5e-4;
/** A coordinate agrees when |fd − autodiff| ≤ ABS_TOL + REL_TOL·|autodiff|. */
const ABS_TOL = 1e-3;
const REL_TOL = 1e-2;
/**
 * Where the one-sided slopes (L(θ+h)−L(θ))/h and (L(θ)−L(θ−h))/h differ by more than that
 * tolerance, a max-pool kink lies within h and no difference quotient measures the gradient:
 * such coordinates are counted and skipped, and at most this share of them may be.
 */
const MAX_KINKED = 0.25;
/** Step and relative tolerance of the check along a random direction through all parameters. */
const H_DIRECTION = 1e-2;
const REL_TOL_DIRECTION = 5e-2;
const SAMPLES = 3;
const DROPOUT_SEED = 12345;

/** Random pixels and labels: the check needs no real data. */
function tinyBatch(seed: number): Batch {
  const rng = new Rng(seed);
  const images = Uint8Array.from({ length: SAMPLES * IMAGE_BYTES }, () => rng.int(256));
  const labels = Uint8Array.from({ length: SAMPLES }, () => rng.int(NUM_CLASSES));
  return { images, labels, count: SAMPLES };
}

/** The summed training-mode loss at `params`, computed directly (no gradient tape). */
function lossAt(b: ComputeBackend, model: ModelSpec, state: ModelState, params: readonly Float32Array[], batch: Batch): number {
  const tf = b.tf;
  return tf.tidy(() => {
    const x = tf.tensor4d(normalizeImages(batch.images, batch.count), [batch.count, IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS]);
    const channels = dropoutChannels(model.layers);
    const masks = dropoutMasks(model.layers, batch.count, DROPOUT_SEED).map((m, k) => tf.tensor4d(m, [batch.count, 1, 1, channels[k]!]));
    const p = model.params.map((s, i) => tf.tensor(params[i]!, [...s.shape], 'float32'));
    const buffers = model.buffers.map((s, i) => tf.tensor(state.buffers[i]!, [...s.shape], 'float32'));
    const { logits } = forward(tf, model.layers, x, { params: p, buffers, dropoutMasks: masks }, true);
    const targets = new Float32Array(batch.count * NUM_CLASSES);
    batch.labels.forEach((l, i) => (targets[i * NUM_CLASSES + l] = 1));
    const logProbs = tf.sub(logits, tf.logSumExp(logits, 1, true));
    return (tf.neg(tf.sum(tf.mul(logProbs, tf.tensor2d(targets, [batch.count, NUM_CLASSES])))) as tfjs.Scalar).dataSync()[0]!;
  });
}

/** The loss at θ + h·v and θ − h·v (`direction` v: one array per parameter tensor). */
function lossesAround(b: ComputeBackend, model: ModelSpec, state: ModelState, batch: Batch, direction: readonly Float32Array[], h: number): [number, number] {
  const moved = (sign: number): Float32Array[] => state.params.map((p, i) => p.map((v, j) => v + sign * h * direction[i]![j]!));
  return [lossAt(b, model, state, moved(1), batch), lossAt(b, model, state, moved(-1), batch)];
}

/** Indices of the `k` largest |g| entries and `r` random others. */
function coordinates(g: Float32Array, k: number, r: number, rng: Rng): number[] {
  const order = Array.from(g.keys()).sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!));
  const picked = new Set(order.slice(0, k));
  while (picked.size < Math.min(g.length, k + r)) picked.add(rng.int(g.length));
  return [...picked];
}

function checkModel(backendName: BackendName, name: ModelName, getBackend: () => ComputeBackend): void {
  test(`${name}: autodiff gradients match central differences`, async (t) => {
    const b = getBackend();
    const model = modelSpec(name);
    const state = initialState(model, 3);
    const batch = tinyBatch(17);
    const runtime = new ModelRuntime(b, model);
    let grad: GradientResult;
    try {
      runtime.setState(state);
      // (Promise.resolve: ModelRuntime.gradients is synchronous today and may become async.)
      grad = await Promise.resolve(runtime.gradients(batch, DROPOUT_SEED));
    } finally {
      runtime.dispose();
    }
    // The loss computed here is the one the runtime differentiates.
    const l0 = lossAt(b, model, state, state.params, batch);
    assert.ok(Math.abs(l0 - grad.lossSum) <= 1e-5 * Math.abs(l0), `loss ${l0} vs runtime ${grad.lossSum}`);

    const rng = new Rng(99);
    const failures: string[] = [];
    const kinked: string[] = [];
    let checked = 0;
    let worst = 0;
    model.params.forEach((p, i) => {
      const g = grad.grads[i]!;
      for (const j of coordinates(g, 2, 1, rng)) {
        const direction = model.params.map((s) => new Float32Array(s.size));
        direction[i]![j] = 1;
        const [plus, minus] = lossesAround(b, model, state, batch, direction, H);
        const tol = ABS_TOL + REL_TOL * Math.abs(g[j]!);
        checked++;
        if (Math.abs((plus - l0) / H - (l0 - minus) / H) > tol) {
          kinked.push(`${p.name}[${j}]`);
          continue;
        }
        const fd = (plus - minus) / (2 * H);
        worst = Math.max(worst, Math.abs(fd - g[j]!) / tol);
        if (Math.abs(fd - g[j]!) > tol) failures.push(`${p.name}[${j}]: autodiff ${g[j]}, finite difference ${fd}`);
      }
    });
    // One random direction through every parameter at once: d/dε L(θ + ε·v) = <∇L, v>.
    const v = model.params.map((s) => Float32Array.from({ length: s.size }, () => rng.uniform(-1, 1)));
    const norm = Math.sqrt(v.reduce((n, a) => n + a.reduce((m, x) => m + x * x, 0), 0));
    v.forEach((a) => a.forEach((x, j) => (a[j] = x / norm)));
    const dot = grad.grads.reduce((n, g, i) => n + g.reduce((m, x, j) => m + x * v[i]![j]!, 0), 0);
    const [plus, minus] = lossesAround(b, model, state, batch, v, H_DIRECTION);
    const fdDir = (plus - minus) / (2 * H_DIRECTION);
    if (!(Math.abs(fdDir - dot) <= REL_TOL_DIRECTION * Math.abs(dot))) failures.push(`random direction: autodiff ${dot}, finite difference ${fdDir}`);
    t.diagnostic(`${backendName} ${name}: ${checked - kinked.length} of ${checked} coordinates checked (worst error ${worst.toFixed(2)} of the tolerance), ` +
      `${kinked.length} skipped at a kink (${kinked.join(', ') || 'none'}); random direction: autodiff ${dot.toExponential(4)}, finite difference ${fdDir.toExponential(4)}`);
    assert.ok(kinked.length <= MAX_KINKED * checked, `${kinked.length} of ${checked} coordinates at a kink`);
    assert.deepEqual(failures, []);
  });
}

describe('finite differences on the cpu backend (float32)', () => {
  let b: ComputeBackend;
  before(async () => {
    b = await loadTestBackend('cpu');
  });
  for (const name of ['net', 'net-dropout', 'net-batchnorm'] as const) checkModel('cpu', name, () => b);
});

// Flock's own training kernels (shared/backends/kernels/) run on wasm: the same check there.
describe('finite differences on the wasm backend (float32, Flock kernels)', () => {
  let b: ComputeBackend;
  before(async () => {
    b = await loadTestBackend('wasm');
  });
  for (const name of ['net', 'net-dropout', 'net-batchnorm'] as const) checkModel('wasm', name, () => b);
});
