import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveTrainConfig } from '../shared/training/config.js';
import { isFlockError } from '../shared/errors.js';
import { NotFiniteError, StepSum, poolBatchStats, reduceStep } from '../shared/training/reduce.js';
import { Rng } from '../shared/random.js';
import { planEpoch, stepsPerEpoch, validationChunks } from '../shared/training/schedule.js';
import { sgdStep } from '../shared/training/sgd.js';

describe('schedule', () => {
  it('drops the last incomplete batch: 156 steps of 64 from 10,000 images', () => {
    assert.equal(stepsPerEpoch(10000, 64), 156);
  });

  it('covers each sample at most once per epoch, in micro-batches of the given size', () => {
    const plan = planEpoch(1000, 64, 24, 5, 2);
    const seen = new Set<number>();
    for (let s = 0; s < plan.stepsPerEpoch; s++) {
      const mbs = plan.microBatches(s);
      assert.deepEqual(mbs.map((m) => m.indices.length), [24, 24, 16]);
      assert.deepEqual(mbs.map((m) => m.id), [0, 1, 2]);
      for (const m of mbs) for (const i of m.indices) seen.add(i);
    }
    assert.equal(seen.size, 15 * 64);
  });

  it('depends only on (seed, epoch)', () => {
    assert.deepEqual(planEpoch(500, 32, 8, 1, 3).microBatches(4), planEpoch(500, 32, 8, 1, 3).microBatches(4));
    assert.notDeepEqual(planEpoch(500, 32, 8, 1, 3).microBatches(0), planEpoch(500, 32, 8, 1, 4).microBatches(0));
  });

  it('validation chunks count every image exactly once', () => {
    const chunks = validationChunks(2000, 300);
    const all = chunks.flatMap((c) => Array.from(c.indices));
    assert.equal(all.length, 2000);
    assert.equal(new Set(all).size, 2000);
  });
});

describe('reduction', () => {
  it('averages summed gradients over all samples of the step', () => {
    const r = reduceStep([
      { grads: [Float32Array.of(2, 4)], lossSum: 3, correct: 1, count: 2, batchStats: [] },
      { grads: [Float32Array.of(1, 2)], lossSum: 1, correct: 2, count: 2, batchStats: [] },
    ]);
    assert.deepEqual(r.grads, [Float32Array.of(0.75, 1.5)]);
    assert.deepEqual([r.lossSum, r.correct, r.count], [4, 3, 4]);
  });

  it('StepSum: the same bits as reduceStep whatever the arrival order; a non-finite result is refused and leaves the sum as it was', () => {
    const rng = new Rng(7);
    const sizes = [5, 300, 1];
    const ids = [3, 8, 9, 12, 20, 21];
    const make = (): { grads: Float32Array[]; lossSum: number; correct: number; count: number; batchStats: [] } => ({
      grads: sizes.map((n) => Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 10 ** (rng.int(12) - 6))), lossSum: rng.next(), correct: 1, count: 3, batchStats: [],
    });
    const results = ids.map(make);
    const expected = reduceStep(results);
    for (const order of [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 0, 5, 1, 4, 3], [1, 3, 5, 0, 2, 4]]) {
      const sum = new StepSum(ids, sizes, true);
      for (const k of order) {
        if (k === 2 || k === 0) {
          // A broken copy of the same unit, offered first: refused, whether it is next in order or not.
          const broken = { ...results[k]!, grads: results[k]!.grads.map((g, t) => (t === 1 ? Float32Array.from(g, (v, i) => (i === 150 ? Number.NaN : v)) : g)) };
          assert.throws(() => sum.add(ids[k]!, broken), (err: unknown) => err instanceof NotFiniteError && err.tensor === 1);
        }
        sum.add(ids[k]!, results[k]!);
      }
      const got = sum.finish();
      assert.deepEqual(got.grads.map((g) => [...new Uint8Array(g.buffer, g.byteOffset, g.byteLength)]), expected.grads.map((g) => [...new Uint8Array(g.buffer, g.byteOffset, g.byteLength)]), `order ${order.join(',')}`);
      assert.deepEqual([got.lossSum, got.correct, got.count], [expected.lossSum, expected.correct, expected.count]);
    }
    const sum = new StepSum(ids, sizes, true);
    sum.add(3, results[0]!);
    assert.throws(() => sum.add(3, results[0]!), /added twice/);
    assert.throws(() => sum.add(4, results[0]!), /not part of this step/);
    assert.throws(() => sum.finish(), /5 of 6 units missing/);
  });

  it('reduce groups: the canonical tree, the same bits from single results, from relays\' group sums, or a mix, in any order', () => {
    const rng = new Rng(11);
    const sizes = [7, 500];
    const ids = Array.from({ length: 10 }, (_, i) => i);
    const G = 3;
    const results = ids.map(() => ({
      grads: sizes.map((n) => Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 10 ** (rng.int(12) - 6))), lossSum: rng.next(), correct: 1, count: 2, batchStats: [] as [],
    }));
    const bits = (gs: readonly Float32Array[]): number[][] => gs.map((g) => [...new Uint8Array(g.buffer, g.byteOffset, g.byteLength)]);
    // The tree by hand: each group from zero in id order, then the group sums from zero in order, / count.
    const tree = sizes.map((n, k) => {
      const total = new Float32Array(n);
      for (let g = 0; g * G < ids.length; g++) {
        const acc = new Float32Array(n);
        for (let id = g * G; id < Math.min(ids.length, (g + 1) * G); id++) for (let i = 0; i < n; i++) acc[i]! += results[id]!.grads[k]![i]!;
        for (let i = 0; i < n; i++) total[i]! += acc[i]!;
      }
      return total.map((v) => v / 20);
    });
    const expected = reduceStep(results, G);
    assert.deepEqual(bits(expected.grads), bits(tree));
    // A relay's view: a StepSum over its groups' ids alone gives the group sums.
    const relaySums = new StepSum([3, 4, 5, 9], sizes, true, G);
    for (const id of [9, 5, 3, 4]) relaySums.add(id, results[id]!);
    const fromRelay = new Map(relaySums.groupSums().map((g) => [g.group, g]));
    assert.deepEqual([...fromRelay.keys()], [1, 3]);
    for (const order of [[0, 1, 2, 6, 7, 8], [8, 7, 6, 2, 1, 0], [6, 0, 8, 2, 7, 1]]) {
      const sum = new StepSum(ids, sizes, true, G);
      assert.deepEqual(sum.groupIds(), [{ group: 0, ids: [0, 1, 2] }, { group: 1, ids: [3, 4, 5] }, { group: 2, ids: [6, 7, 8] }, { group: 3, ids: [9] }]);
      const partsOf = (g: number): Map<number, (typeof results)[number]> => new Map(fromRelay.get(g)!.ids.map((id) => [id, { ...results[id]!, grads: [] }]));
      sum.addGroup(3, fromRelay.get(3)!.sums.map((t) => t.slice()), partsOf(3));
      for (const k of order.slice(0, 3)) sum.add(k, results[k]!);
      sum.addGroup(1, fromRelay.get(1)!.sums.map((t) => t.slice()), partsOf(1));
      for (const k of order.slice(3)) sum.add(k, results[k]!);
      const got = sum.finish();
      assert.deepEqual(bits(got.grads), bits(expected.grads), `order ${order.join(',')}`);
      assert.deepEqual([got.lossSum, got.correct, got.count], [expected.lossSum, expected.correct, expected.count]);
    }
    const sum = new StepSum(ids, sizes, true, G);
    sum.add(3, results[3]!);
    assert.throws(() => sum.addGroup(1, fromRelay.get(1)!.sums.map((t) => t.slice()), new Map([3, 4, 5].map((id) => [id, results[id]!]))), /already has results/);
    assert.throws(() => sum.addGroup(0, sizes.map((n) => new Float32Array(n)), new Map([[0, results[0]!]])), /needs results for exactly/);
    assert.throws(() => sum.addGroup(2, sizes.map((n) => new Float32Array(n).fill(Number.NaN)), new Map([6, 7, 8].map((id) => [id, results[id]!]))), NotFiniteError);
  });

  it('pools batch-norm statistics exactly as one batch would', () => {
    const a = [1, 2, 3];
    const b = [10, 20];
    const stats = (xs: number[]): { mean: Float32Array; variance: Float32Array } => {
      const m = xs.reduce((s, x) => s + x, 0) / xs.length;
      return { mean: Float32Array.of(m), variance: Float32Array.of(xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length) };
    };
    const [pooled] = poolBatchStats([{ stats: [stats(a)], count: 3 }, { stats: [stats(b)], count: 2 }], 5);
    const all = [...a, ...b];
    const mean = all.reduce((s, x) => s + x, 0) / 5;
    const unbiased = all.reduce((s, x) => s + (x - mean) ** 2, 0) / 4;
    assert.ok(Math.abs(pooled!.mean[0]! - mean) < 1e-5);
    assert.ok(Math.abs(pooled!.unbiasedVariance[0]! - unbiased) < 1e-4);
  });
});

describe('SGD', () => {
  it('applies weight decay as PyTorch does: w -= lr * (g + wd * w)', () => {
    const w = [Float32Array.of(1, -2)];
    sgdStep(w, [Float32Array.of(0.5, 0.5)], { momentum: [] }, { lr: 0.1, momentum: 0, weightDecay: 0.01 });
    assert.ok(Math.abs(w[0]![0]! - (1 - 0.1 * (0.5 + 0.01))) < 1e-7);
    assert.ok(Math.abs(w[0]![1]! - (-2 - 0.1 * (0.5 - 0.02))) < 1e-7);
  });

  it('uses momentum buffers like torch.optim.SGD (first step buf = d)', () => {
    const w = [Float32Array.of(0)];
    const state = { momentum: [] as Float32Array[] };
    const opts = { lr: 1, momentum: 0.9, weightDecay: 0 };
    sgdStep(w, [Float32Array.of(1)], state, opts);
    assert.equal(w[0]![0], -1);
    sgdStep(w, [Float32Array.of(1)], state, opts);
    assert.ok(Math.abs(w[0]![0] - (-1 - 1.9)) < 1e-6);
  });

  it('gives the bits of the per-element rule d = fround(g + wd·w), buf = fround(μ·buf + d), w = fround(w − lr·buf), with and without momentum', () => {
    const rng = new Rng(7);
    const values = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (rng.nextUint32() / 2 ** 32 - 0.5) * scale);
    for (const opts of [{ lr: 0.01, momentum: 0, weightDecay: 0 }, { lr: 0.03, momentum: 0, weightDecay: 1e-3 }, { lr: 0.02, momentum: 0.9, weightDecay: 5e-4 }]) {
      const sizes = [7, 300];
      const w = sizes.map((n) => values(n, 2));
      const ref = w.map((t) => t.slice());
      const refBuf: Float32Array[] = [];
      const state = { momentum: [] as Float32Array[] };
      for (let step = 0; step < 4; step++) {
        const g = sizes.map((n) => values(n, 0.1));
        sgdStep(w, g, state, opts);
        ref.forEach((t, k) => {
          if (opts.momentum !== 0 && !refBuf[k]) refBuf[k] = new Float32Array(t.length);
          for (let i = 0; i < t.length; i++) {
            const d = Math.fround(g[k]![i]! + opts.weightDecay * t[i]!);
            const buf = refBuf[k];
            if (buf) buf[i] = step === 0 ? d : Math.fround(opts.momentum * buf[i]! + d);
            t[i] = Math.fround(t[i]! - opts.lr * (buf ? buf[i]! : d));
          }
        });
        ref.forEach((t, k) => assert.deepEqual(new Uint32Array(w[k]!.buffer), new Uint32Array(t.buffer), `step ${step}, tensor ${k}, ${JSON.stringify(opts)}`));
      }
    }
  });
});

describe('options', () => {
  it("defaults to the recipe and splits the batch over the workers at start", () => {
    const c = resolveTrainConfig({}, 3);
    assert.deepEqual({ ...c }, { model: 'net', epochs: 100, batchSize: 64, microBatch: 22, lr: 0.01, momentum: 0, weightDecay: 0, seed: 0, wirePrecision: 'float32', reduceGroup: 0 });
  });

  it('rejects bad values with ERR_BAD_OPTION naming the flag', () => {
    assert.throws(() => resolveTrainConfig({ microBatch: 100 }, 1), (e) => isFlockError(e, 'ERR_BAD_OPTION') && /--micro-batch/.test(e.message));
    assert.throws(() => resolveTrainConfig({ lr: -1 }, 1), (e) => isFlockError(e, 'ERR_BAD_OPTION') && /--lr/.test(e.message));
    assert.throws(() => resolveTrainConfig({ wirePrecision: 'float8' as 'float16' }, 1), (e) => isFlockError(e, 'ERR_BAD_OPTION') && /--wire-precision/.test(e.message));
  });
});
