// Verified steps (issue 12) on real worker processes: a worker that lies in each way is
// quarantined within a bounded number of steps and the run ends with weights bit-identical
// to a run without it; a worker faking validation results does not change the accuracy;
// an honest mixed fleet (wasm + cpu) is never quarantined over 1,000 audited computations.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Arbiter } from '../coordinator/arbiter.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { Trainer, type TrainResult } from '../coordinator/trainer.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { planEpoch, validationChunks } from '../shared/training/schedule.js';
import { reap, spawnNode, spawnWorker, type Proc } from './child-procs.js';
import { trainingBackend } from './helpers.js';
import { LogRecorder } from './log-recorder.js';
import type { Lie } from './lying-worker.js';
import { sameState } from './reference-run.js';

const LYING_WORKER = fileURLToPath(new URL('./lying-worker.js', import.meta.url));

describe('verified steps: audits, guards, quarantine and exact recovery', () => {
  let backend: ComputeBackend;
  let dataDir: string;
  let train: Dataset;
  let validation: Dataset;
  const runtimes: ModelRuntime[] = [];

  before(async () => {
    backend = await trainingBackend();
    dataDir = await mkdtemp(join(tmpdir(), 'flock-verify-'));
    await writeSyntheticCifar(dataDir, { trainPerFile: 100, testCount: 200, seed: 31 });
    ({ train, validation } = await loadCifar(dataDir));
  });
  after(async () => {
    for (const r of runtimes) r.dispose();
    await rm(dataDir, { recursive: true, force: true });
  });

  const runtime = (config: TrainConfig): ModelRuntime => {
    const r = new ModelRuntime(backend, modelSpec(config.model));
    runtimes.push(r);
    return r;
  };

  async function pool(config: TrainConfig, rec: LogRecorder, auditRate: number): Promise<{ pool: WorkerPool; quarantine: Quarantine }> {
    const quarantine = new Quarantine();
    const arbiter = new Arbiter(runtime(config), { train, validation }, config.seed, backend.name);
    const p = await WorkerPool.listen({ port: 0 }, {
      logger: rec.logger('info'), clock: systemClock, model: modelSpec(config.model), config, train, validation,
      verify: { arbiter, quarantine, auditRate, auditSeed: 7 },
    });
    return { pool: p, quarantine };
  }

  const trainer = (config: TrainConfig, executor: LocalExecutor | WorkerPool, rec: LogRecorder | undefined, trainCount: number): Trainer =>
    new Trainer(config, { executor, logger: (rec ?? new LogRecorder()).logger('info'), clock: systemClock }, { trainCount, validationCount: validation.count, evalChunk: 50 });

  const config = resolveTrainConfig({ model: 'net', epochs: 2, batchSize: 16, microBatch: 4, lr: 0.05, momentum: 0.9, seed: 3 }, 2);
  const STEPS_PER_EPOCH = 12;
  const trainCount = STEPS_PER_EPOCH * config.batchSize;
  let reference: TrainResult;

  before(async () => {
    reference = await trainer(config, new LocalExecutor(runtime(config), train, validation, config.seed, systemClock), undefined, trainCount).run();
  });

  /** One honest worker and one liar; audit rate 1 (one of the 4 micro-batches of every step). */
  async function withLiar(lie: Lie): Promise<{ result: TrainResult; rec: LogRecorder; liar: Proc; honest: Proc; quarantine: Quarantine }> {
    const rec = new LogRecorder();
    const { pool: p, quarantine } = await pool(config, rec, 1);
    const honest = spawnWorker(p.url, 'honest');
    const liar = spawnNode('liar', LYING_WORKER, ['--connect', p.url, '--name', 'liar', '--lie', lie]);
    try {
      await p.waitForWorkers(2);
      const result = await trainer(config, p, rec, trainCount).run();
      await p.close();
      assert.equal((await honest.exited).code, 0, `the honest worker exits 0: ${honest.output()}`);
      return { result, rec, liar, honest, quarantine };
    } finally {
      await p.close();
      await reap([honest, liar]);
    }
  }

  // With 2 workers, 4 micro-batches a step (2 each) and one audited per step, a worker wrong on
  // every result is audited with probability 1/2 per step: caught within 12 steps but with
  // probability 2^-12. Guards catch gross errors (x10) as soon as 16 norms are known.
  const BOUND_STEPS = 12;
  for (const lie of ['scale', 'sign', 'other-micro-batch', 'stale', 'noise', 'sometimes'] as const) {
    it(`a worker whose gradients are wrong (${lie}) is quarantined within ${BOUND_STEPS} steps; final weights are bit-identical to the run without it`, async () => {
      const { result, rec, liar, quarantine } = await withLiar(lie);
      const q = rec.filter((e) => e.event === 'quarantined');
      assert.equal(q.length, 1, `one quarantine: ${JSON.stringify(q)}`);
      assert.equal(q[0]!.workerName, 'liar');
      const bound = lie === 'sometimes' ? 2 * STEPS_PER_EPOCH : BOUND_STEPS;
      assert.ok((q[0]!.step as number) < bound, `quarantined at step ${String(q[0]!.step)}`);
      assert.ok(typeof q[0]!.claimed === 'number' && typeof q[0]!.settled === 'number' && typeof q[0]!.arbiter === 'string', 'evidence logged');
      assert.equal(quarantine.has('liar'), true);
      const exit = await liar.exited;
      assert.notEqual(exit.code, 0, 'the quarantined worker leaves with an error');
      assert.match(liar.output(), /quarantined|ERR_QUARANTINED/);
      assert.ok(sameState(result.state, reference.state), 'final weights equal the run without the liar');
      assert.deepEqual(result.history.map((h) => h.valAccuracy), reference.history.map((h) => h.valAccuracy));
      const done = rec.filter((e) => e.event === 'done')[0]!;
      const v = done.verification as Record<string, number>;
      assert.equal(v.quarantines, 1);
      assert.ok((v.audits ?? 0) > 0);
    });
  }

  it('a worker that fakes validation results does not change the reported validation accuracy', async () => {
    const { result, rec } = await withLiar('fake-validation');
    assert.equal(rec.filter((e) => e.event === 'quarantined' && e.workerName === 'liar').length, 1);
    assert.deepEqual(result.history.map((h) => [h.valAccuracy, h.valLoss]), reference.history.map((h) => [h.valAccuracy, h.valLoss]));
    assert.ok(sameState(result.state, reference.state));
  });

  it('a quarantined name is refused at hello (4009, the worker exits 1); once lifted it joins', async () => {
    const rec = new LogRecorder();
    const { pool: p, quarantine } = await pool(config, rec, 0.05);
    quarantine.add({ workerName: 'banned', workerId: 9, backend: 'wasm', kind: 'gradients', step: 1, unit: 0, claimed: 1, settled: 2, arbiter: 'coordinator', why: 'test' });
    const refused = spawnWorker(p.url, 'banned');
    try {
      const exit = await refused.exited;
      assert.equal(exit.code, 1, refused.output());
      assert.match(refused.stderr(), /quarantined.*\[ERR_QUARANTINED\]/s);
      const rejected = rec.filter((e) => e.event === 'worker_rejected');
      assert.equal(rejected.at(-1)?.code, 4009);
      assert.equal(p.workerCount(), 0);
      assert.equal(quarantine.lift('banned'), true);
      const again = spawnWorker(p.url, 'banned');
      try {
        await p.waitForWorkers(1);
        assert.equal(p.workerCount(), 1);
        await p.close();
        assert.equal((await again.exited).code, 0);
      } finally {
        await reap([again]);
      }
    } finally {
      await p.close();
      await reap([refused]);
    }
  });

  it('an honest mixed fleet (wasm + cpu) is never quarantined over 1,000 computations checked twice', async () => {
    const rec = new LogRecorder();
    const mixed = resolveTrainConfig({ model: 'net', epochs: 1, batchSize: 2, microBatch: 1, lr: 0.05, seed: 4 }, 2);
    const { pool: p, quarantine } = await pool(mixed, rec, 1);
    const workers = [spawnWorker(p.url, 'wasm-1', { backend: 'wasm' }), spawnWorker(p.url, 'cpu-1', { backend: 'cpu' })];
    try {
      await p.waitForWorkers(2);
      const weights = { version: 0, state: initialState(modelSpec(mixed.model), mixed.seed) };
      const plan = planEpoch(train.count, mixed.batchSize, mixed.microBatch, mixed.seed, 0);
      // 150 audited micro-batches (one per step, each computed on both backends) and
      // 850 validation chunks of one image computed on both backends.
      for (let step = 0; step < 150; step++) {
        await p.gradients({ epoch: 0, globalStep: step, microBatches: plan.microBatches(step % plan.stepsPerEpoch) }, weights);
      }
      const chunks = validationChunks(validation.count, 1);
      for (let done = 0; done < 850; done += chunks.length) await p.evaluate('validation', chunks.slice(0, Math.min(chunks.length, 850 - done)), weights);
      const v = p.verificationCounters();
      assert.equal(v.audits + v.validationChecks, 1000);
      assert.equal(v.mismatches, 0, `mismatches: ${JSON.stringify(rec.filter((e) => e.event === 'mismatch'))}`);
      assert.equal(v.quarantines, 0);
      assert.deepEqual(quarantine.list(), []);
      assert.equal(p.workerCount(), 2);
    } finally {
      await p.close();
      await reap(workers);
    }
  });
});
