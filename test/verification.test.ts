// Verified steps (issue 12) on real worker processes: a worker that lies in each way is
// quarantined within a bounded number of steps and the run ends with weights bit-identical
// to a run without it; a worker faking validation results does not change the accuracy;
// claimed compute times are bounded by what the coordinator saw; the quarantine list survives
// --resume. An honest mixed fleet over 1,000 audits: honest-fleet.test.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Arbiter } from '../coordinator/arbiter.js';
import { CheckpointStore } from '../coordinator/checkpoint.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { Trainer, type TrainResult } from '../coordinator/trainer.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import { systemClock } from '../shared/clock.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { COORDINATOR_CLI, reap, spawnNode, spawnWorker, type Proc } from './child-procs.js';
import { LogRecorder } from './log-recorder.js';
import type { Lie } from './lying-worker.js';
import { sameState, useTrainingData } from './reference-run.js';

const LYING_WORKER = fileURLToPath(new URL('./lying-worker.js', import.meta.url));

describe('verified steps: audits, guards, quarantine and exact recovery', () => {
  const data = useTrainingData('flock-verify-', { trainPerFile: 100, testCount: 200, seed: 31 });
  const runtimes: ModelRuntime[] = [];
  after(() => {
    for (const r of runtimes) r.dispose();
  });

  const runtime = (config: TrainConfig): ModelRuntime => {
    const r = new ModelRuntime(data.backend, modelSpec(config.model));
    runtimes.push(r);
    return r;
  };

  async function pool(config: TrainConfig, rec: LogRecorder, auditRate: number): Promise<{ pool: WorkerPool; quarantine: Quarantine }> {
    const quarantine = new Quarantine();
    const arbiter = new Arbiter(runtime(config), data, config.seed, data.backend.name);
    const p = await WorkerPool.listen({ port: 0 }, {
      logger: rec.logger('info'), clock: systemClock, model: modelSpec(config.model), config, train: data.train, validation: data.validation,
      verify: { arbiter, quarantine, auditRate, auditSeed: 7 },
    });
    return { pool: p, quarantine };
  }

  const trainer = (config: TrainConfig, executor: LocalExecutor | WorkerPool, rec: LogRecorder | undefined, trainCount: number, store?: CheckpointStore): Trainer =>
    new Trainer(config, { executor, logger: (rec ?? new LogRecorder()).logger('info'), clock: systemClock, ...(store ? { store } : {}) }, { trainCount, validationCount: data.validation.count, evalChunk: 50 });

  const config = resolveTrainConfig({ model: 'net', epochs: 2, batchSize: 16, microBatch: 4, lr: 0.05, momentum: 0.9, seed: 3 }, 2);
  const STEPS_PER_EPOCH = 12;
  const trainCount = STEPS_PER_EPOCH * config.batchSize;
  let reference: TrainResult;

  before(async () => {
    reference = await trainer(config, new LocalExecutor(runtime(config), data.train, data.validation, config.seed, systemClock), undefined, trainCount).run();
  });

  /** One honest worker and one liar; audit rate 1 (one of the 4 micro-batches of every step). */
  async function withLiar(lie: Lie, store?: CheckpointStore): Promise<{ result: TrainResult; rec: LogRecorder; liar: Proc; honest: Proc; quarantine: Quarantine }> {
    const rec = new LogRecorder();
    const { pool: p, quarantine } = await pool(config, rec, 1);
    const honest = spawnWorker(p.url, 'honest');
    const liar = spawnNode('liar', LYING_WORKER, ['--connect', p.url, '--name', 'liar', '--lie', lie]);
    try {
      await p.waitForWorkers(2);
      const result = await trainer(config, p, rec, trainCount, store).run();
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

  it('a worker that claims each gradient took 1,000 s does not skew the timing figures (compute time is bounded by what the coordinator saw)', async () => {
    const { result, rec } = await withLiar('compute-time');
    assert.deepEqual(rec.filter((e) => e.event === 'quarantined'), [], 'its results are right: no quarantine');
    assert.ok(sameState(result.state, reference.state));
    for (const h of result.history) assert.ok(h.computeSeconds <= h.seconds, `epoch ${h.epoch}: compute ${h.computeSeconds} s within the epoch's ${h.seconds} s`);
  });

  it('the quarantine list is kept in checkpoints: the coordinator resumed with --resume still refuses the worker', async () => {
    const ck = join(data.dir, 'ck-quarantine');
    const store = new CheckpointStore(ck);
    const { quarantine } = await withLiar('scale', store);
    assert.equal(quarantine.has('liar'), true);
    const newest = await store.newest((file, err) => assert.fail(`${file}: ${String(err)}`));
    assert.deepEqual(newest?.checkpoint.quarantined?.map((e) => e.workerName), ['liar'], 'the checkpoint lists the quarantined worker');
    assert.deepEqual(newest.checkpoint.quarantined, quarantine.list(), 'with its evidence');

    // The CLI resumes from that checkpoint for one more epoch: the liar is refused at hello
    // (4009, it exits 1), an honest worker finishes the run.
    const procs: Proc[] = [];
    const coordinator = spawnNode('coordinator', COORDINATOR_CLI, ['start', '--resume', '--epochs', String(config.epochs + 1), '--workers', '1', '--port', '0',
      '--data-dir', data.dir, '--checkpoint-dir', ck, '--backend', 'wasm', '--log-format', 'json', '--log-level', 'info', '--no-http']);
    procs.push(coordinator);
    try {
      const restored = await coordinator.log.next((e) => e.event === 'quarantine_restored' || e.event === 'listening');
      assert.equal(restored.event, 'quarantine_restored', 'logged before listening');
      assert.deepEqual(restored.names, ['liar']);
      const url = (await coordinator.log.next((e) => e.event === 'listening')).url as string;
      const liar = spawnNode('liar', LYING_WORKER, ['--connect', url, '--name', 'liar', '--lie', 'scale']);
      procs.push(liar);
      assert.equal((await liar.exited).code, 1, liar.output());
      assert.match(liar.output(), /quarantined|ERR_QUARANTINED/);
      const refused = await coordinator.log.next((e) => e.event === 'worker_rejected');
      assert.equal(refused.code, 4009);
      procs.push(spawnWorker(url, 'honest-2'));
      assert.equal((await coordinator.exited).code, 0, coordinator.output());
      const epochs = coordinator.log.filter((e) => e.event === 'epoch');
      assert.deepEqual(epochs.map((e) => e.epoch), [config.epochs + 1]);
    } finally {
      await reap(procs);
    }
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
});
