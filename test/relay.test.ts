// Relays on real processes: the coordinator's pool in this process, `coordinator relay`
// processes joined to it (one or two levels deep) and worker processes joined to the relays.
// Weights after K steps must be bit-identical to the in-process run with the same reduce
// group, whatever the topology, and when a relay dies mid-step holding groups.
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { Logger } from 'pino';
import type { Executor } from '../coordinator/executor.js';
import type { TrainResult } from '../coordinator/trainer.js';
import type { PoolOptions } from '../coordinator/pool-options.js';
import { Arbiter } from '../coordinator/arbiter.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { Relay } from '../coordinator/relay.js';
import { WorkerPool, type PoolDeps } from '../coordinator/worker-pool.js';
import { writeSelfSignedCert } from '../scripts/netsim/certs.js';
import { DelayRelay } from '../scripts/netsim/delay-line.js';
import { readCheckpointFile } from '../coordinator/checkpoint.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { systemClock } from '../shared/clock.js';
import { datasetHash } from '../shared/data/cifar.js';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { CloseCode, MessageType, NORMAL_CLOSURE, decode, encode } from '../shared/protocol.js';
import { nodeSocketFactory } from '../worker/node-socket.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import { COORDINATOR_CLI, reap, spawnNode, spawnWorker, startRelay, type Proc } from './child-procs.js';
import { silentLogger } from './helpers.js';
import { LogRecorder } from './log-recorder.js';
import { fuzzFrames, type FuzzFrame } from './fault-tools.js';
import { assertCheckpointedOnce, assertFinalCheckpoint, checkpointFile, sameState, trainInProcess, trainThenStop, trainWith, useTrainingData, type RunSizes } from './reference-run.js';

describe('relays: exact hierarchical aggregation', () => {
  const data = useTrainingData('flock-relay-', { trainPerFile: 120, testCount: 300, seed: 12 });
  const config = resolveTrainConfig({ model: 'net-batchnorm', epochs: 1, batchSize: 32, microBatch: 4, lr: 0.05, momentum: 0.9, seed: 9, reduceGroup: 2 }, 1);
  const steps = 3;
  const sizes: RunSizes = { trainCount: steps * 32, validationCount: 40, evalChunk: 20 };

  let reference: TrainResult | undefined;
  async function local(): Promise<TrainResult> {
    if (reference) return reference;
    const ran = await trainInProcess(data, config, sizes);
    assert.ok(!sameState(ran.state, initialState(modelSpec(config.model), config.seed)), 'training changed the weights');
    reference = ran;
    return ran;
  }

  /**
   * Trains through the pool once `expected` connections joined it; `build` starts the relays
   * and workers (pushing every process to `procs`). `wrap` may intercept the pool.
   */
  async function distributed(
    build: (url: string, procs: Proc[]) => Promise<void>, expected: number, logger: Logger = silentLogger(), wrap?: (pool: WorkerPool, procs: Proc[]) => Executor,
    orphans: ReadonlySet<string> = new Set(), poolOpts: Partial<PoolOptions> = {}, verify?: PoolDeps['verify'],
  ): Promise<TrainResult> {
    const pool = await WorkerPool.listen({ port: 0, ...poolOpts }, { logger, clock: systemClock, model: modelSpec(config.model), config, train: data.train, validation: data.validation, ...(verify ? { verify } : {}) });
    const procs: Proc[] = [];
    // Relays pass the stop on to their workers; everyone still running exits 0 (but the
    // workers of a killed relay, which keep trying to rejoin it until reaped).
    return trainThenStop(pool, procs, async () => {
      await build(pool.url, procs);
      await pool.waitForWorkers(expected);
      return trainWith(config, wrap ? wrap(pool, procs) : pool, sizes);
    }, orphans);
  }

  it('one level: two relays with two and one workers give the in-process weights', async () => {
    const ref = await local();
    const result = await distributed(async (url, procs) => {
      const [a, b] = await Promise.all([startRelay(url, 'relay-a', procs), startRelay(url, 'relay-b', procs)]);
      procs.push(spawnWorker(a.url, 'a1'), spawnWorker(a.url, 'a2'), spawnWorker(b.url, 'b1'));
    }, 2);
    assert.equal(result.globalStep, steps);
    assert.ok(sameState(result.state, ref.state), 'weights through relays differ from the in-process run');
    assert.deepEqual(result.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]), ref.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]));
  });

  it('two levels, next to a direct worker: a relay of two relays, plus one worker on the coordinator', async () => {
    const ref = await local();
    const result = await distributed(async (url, procs) => {
      const top = await startRelay(url, 'relay-top', procs);
      const [l, r] = await Promise.all([startRelay(top.url, 'relay-left', procs), startRelay(top.url, 'relay-right', procs)]);
      procs.push(spawnWorker(l.url, 'l1'), spawnWorker(r.url, 'r1'), spawnWorker(url, 'direct'));
    }, 2);
    assert.ok(sameState(result.state, ref.state), 'weights through two levels of relays differ from the in-process run');
  });

  it('verified (audit rate 1) through relays next to a direct worker: only direct micro-batches are audited, group sums pass the guards, the weights are the in-process ones', async () => {
    const ref = await local();
    const rec = new LogRecorder();
    const runtime = new ModelRuntime(data.backend, modelSpec(config.model));
    const quarantine = new Quarantine();
    let counters: ReturnType<WorkerPool['verificationCounters']> | undefined;
    try {
      const result = await distributed(async (url, procs) => {
        const a = await startRelay(url, 'relay-a', procs);
        procs.push(spawnWorker(a.url, 'a1'), spawnWorker(a.url, 'a2'), spawnWorker(url, 'direct'));
      }, 2, rec.logger(), (pool) => ({
        workerCount: () => pool.workerCount(),
        evaluate: (split, chunks, weights) => pool.evaluate(split, chunks, weights),
        gradients: async (work, weights) => {
          const out = await pool.gradients(work, weights);
          counters = pool.verificationCounters();
          return out;
        },
      }), new Set(), {}, { arbiter: new Arbiter(runtime, { train: data.train, validation: data.validation }, config.seed, data.backend.name), quarantine, auditRate: 1, auditSeed: 3 });
      assert.ok(sameState(result.state, ref.state), 'verified weights through a relay differ from the in-process run');
      assert.equal(quarantine.list().length, 0, 'no honest participant is quarantined');
      assert.equal(counters?.mismatches, 0);
      assert.equal(counters?.guardFailures, 0);
      // Each step's one audit is drawn among the direct worker's micro-batches (the relay's come as sums).
      assert.equal(counters?.audits, steps, 'one audit per step, of a direct micro-batch');
    } finally {
      runtime.dispose();
    }
  });

  it('a relay killed with SIGKILL mid-step: its groups are reassigned and the weights are unchanged', async () => {
    const ref = await local();
    const rec = new LogRecorder();
    let victim: Proc | undefined;
    const result = await distributed(async (url, procs) => {
      const [a, b] = await Promise.all([startRelay(url, 'relay-a', procs), startRelay(url, 'relay-b', procs)]);
      procs.push(spawnWorker(a.url, 'a1'), spawnWorker(b.url, 'b1'));
    }, 2, rec.logger(), (pool, procs) => ({
      workerCount: () => pool.workerCount(),
      evaluate: (split, chunks, weights) => pool.evaluate(split, chunks, weights),
      gradients: (work, weights) => {
        const pending = pool.gradients(work, weights);
        // Step 1's groups are out on both relays now; one relay dies with its share.
        if (work.globalStep === 1) {
          victim = procs.find((p) => p.name === 'relay-a');
          victim!.proc.kill('SIGKILL');
        }
        return pending;
      },
    }), new Set(['a1']));
    assert.equal((await victim!.exited).signal, 'SIGKILL');
    const left = await rec.next((e) => e.event === 'worker_left');
    assert.ok(Array.isArray(left.reassigned) && left.reassigned.length > 0, `reassigned ${JSON.stringify(left.reassigned)}`);
    assert.equal(result.globalStep, steps);
    assert.ok(sameState(result.state, ref.state), 'weights after a relay died differ from the undisturbed run');
  });

  it('over wss:// with a token: the relay trusts upstream with --ca, serves TLS with the same token; a worker without it gets 401', async () => {
    const ref = await local();
    const token = 'relay-secret';
    const coordCert = await writeSelfSignedCert(data.dir, 'coord', ['127.0.0.1']);
    const relayCert = await writeSelfSignedCert(data.dir, 'relay', ['127.0.0.1']);
    let intruder: Proc | undefined;
    const result = await distributed(async (url, procs) => {
      assert.match(url, /^wss:/);
      const r = await startRelay(url, 'relay-tls', procs, { token, args: ['--ca', coordCert.ca, '--tls-cert', relayCert.cert, '--tls-key', relayCert.key] });
      assert.match(r.url, /^wss:/);
      intruder = spawnWorker(r.url, 'no-token', { args: ['--ca', relayCert.ca] });
      procs.push(intruder, spawnWorker(r.url, 't1', { token, args: ['--ca', relayCert.ca] }), spawnWorker(r.url, 't2', { token, args: ['--ca', relayCert.ca] }));
    }, 1, silentLogger(), undefined, new Set(['no-token']), { token, tls: { cert: await readFile(coordCert.cert), key: await readFile(coordCert.key) } });
    assert.ok(sameState(result.state, ref.state), 'weights through a TLS relay differ from the in-process run');
    const out = await intruder!.exited;
    assert.notEqual(out.code, 0);
    assert.match(intruder!.output(), /401/);
  });

  /** A TCP proxy on loopback to `targetPort`, without delay: the link a test cuts. */
  const passThrough = (targetPort: number): DelayRelay =>
    new DelayRelay({ listenHost: '127.0.0.1', targetHost: '127.0.0.1', targetPort, upstream: { delayMs: 0, jitterMs: 0 }, downstream: { delayMs: 0, jitterMs: 0 } });

  it('upstream cut mid-run (a TCP proxy resets the link): the relay rejoins with backoff, its workers stay connected, every step is checkpointed once, the weights are the undisturbed run\'s', async (t) => {
    // The coordinator CLI with a checkpoint per step, and the same run in one process for reference.
    const dir = await mkdtemp(join(data.dir, 'cut-'));
    await writeSyntheticCifar(join(dir, 'data'), { trainPerFile: 48, testCount: 48, seed: 14 });
    const steps = 6; // 210 kept training images: 6 steps of 32
    const args = ['--data-dir', join(dir, 'data'), '--model', 'net-batchnorm', '--epochs', '1', '--batch-size', '32', '--micro-batch', '8', '--reduce-group', '2',
      '--lr', '0.05', '--momentum', '0.9', '--seed', '9', '--backend', 'wasm', '--checkpoint-every', '1', '--log-format', 'json', '--no-http'];
    const procs: Proc[] = [];
    let proxy: DelayRelay | undefined;
    try {
      const ref = spawnNode('reference', COORDINATOR_CLI, ['start', '--local', ...args, '--checkpoint-dir', join(dir, 'reference')]);
      procs.push(ref);
      const coordinator = spawnNode('coordinator', COORDINATOR_CLI, ['start', ...args, '--workers', '1', '--checkpoint-dir', join(dir, 'run')]);
      procs.push(coordinator);
      const listening = await Promise.race([coordinator.log.next((e) => e.event === 'listening'), coordinator.exited.then(() => undefined)]);
      assert.ok(listening, `coordinator did not start:\n${coordinator.output()}`);
      proxy = passThrough(Number(new URL(String(listening.url)).port));
      const { port } = await proxy.listen();
      const relay = await startRelay(`ws://127.0.0.1:${port}`, 'relay-cut', procs);
      const workers = [spawnWorker(relay.url, 'c1'), spawnWorker(relay.url, 'c2')];
      procs.push(...workers);
      // Mid-run: step 2 is checkpointed (and step 3's groups are usually out).
      await coordinator.log.next((e) => e.event === 'checkpoint' && (e.globalStep as number) >= 2);
      proxy.cut();
      const reconnecting = await relay.proc.log.next((e) => e.event === 'reconnecting');
      await relay.proc.log.next((e) => e.event === 'relay_rejoined');
      assert.equal((await coordinator.exited).code, 0, coordinator.output().slice(-3000));
      assert.equal((await ref.exited).code, 0, ref.output().slice(-3000));
      for (const p of [relay.proc, ...workers]) assert.equal((await p.exited).code, 0, `${p.name} exits 0 on stop: ${p.output().slice(-2000)}`);

      assertCheckpointedOnce(coordinator.log.events, steps);
      await assertFinalCheckpoint(join(dir, 'run'), steps, await readCheckpointFile(join(dir, 'reference', checkpointFile(steps))));
      // Upstream saw the relay leave and join again, and it still held the images it was sent.
      const joins = coordinator.log.filter((e) => e.event === 'worker_joined' && e.workerName === 'relay-cut');
      assert.ok(joins.length >= 2, `the relay joined ${joins.length} times`);
      assert.ok((joins.at(-1)!.imagesHeld as { train: number }).train > 0, `the rejoined relay kept its images: ${JSON.stringify(joins.at(-1)!.imagesHeld)}`);
      const left = coordinator.log.filter((e) => e.event === 'worker_left' && e.workerName === 'relay-cut');
      assert.ok(left.length >= 1);
      // The relay's workers never noticed: one join each, no reconnect, no departure before the stop.
      for (const w of workers) {
        assert.equal(relay.proc.log.filter((e) => e.event === 'worker_joined' && e.workerName === w.name).length, 1, `${w.name} joined the relay once`);
        assert.equal(w.log.filter((e) => e.event === 'reconnecting').length, 0, `${w.name} did not reconnect`);
      }
      t.diagnostic(`cut (${String(left[0]!.reason)}): relay rejoined after ${String(reconnecting.delayMs)} ms backoff; upstream reassigned ${JSON.stringify(left.map((e) => e.reassigned))}`);
    } finally {
      await proxy?.close();
      await reap(procs);
    }
  });

  it('upstream gone for longer than --give-up-after: the relay exits 1 with a clear error and tells its workers to stop', async () => {
    const pool = await WorkerPool.listen({ port: 0 }, { logger: silentLogger(), clock: systemClock, model: modelSpec(config.model), config, train: data.train, validation: data.validation });
    const proxy = passThrough(Number(new URL(pool.url).port));
    const procs: Proc[] = [];
    try {
      const { port } = await proxy.listen();
      const relay = await startRelay(`ws://127.0.0.1:${port}`, 'relay-abandoned', procs, { args: ['--give-up-after', '1500'] });
      const w = spawnWorker(relay.url, 'g1');
      procs.push(w);
      await relay.proc.log.next((e) => e.event === 'worker_joined' && e.workerName === 'g1');
      // Upstream is unreachable from now on: the listener is gone too.
      await proxy.close();
      const exit = await relay.proc.exited;
      assert.equal(exit.code, 1, relay.proc.output().slice(-2000));
      assert.match(relay.proc.stderr(), /could not reach upstream at ws:\/\/127\.0\.0\.1:\d+ for \d+ s .*giving up/);
      assert.match(relay.proc.stderr(), /ERR_TIMEOUT/);
      assert.ok(relay.proc.log.filter((e) => e.event === 'reconnecting').length >= 1, 'the relay tried to rejoin first');
      assert.equal((await w.exited).code, 0, `its worker was told to stop: ${w.output().slice(-2000)}`);
    } finally {
      await proxy.close();
      await pool.close();
      await reap(procs);
    }
  });

  it('fuzzed frames from upstream: the relay closes with the code each calls for, then rejoins (a protocol violation), stops (a stop) or fails (another protocol version)', async () => {
    const model = modelSpec(config.model);
    const frames = fuzzFrames(0x7e1a9, 44, model);
    const welcome = encode({
      type: MessageType.WELCOME, workerId: 1, config, heartbeatMs: 60_000, hashes: { train: datasetHash(data.train), validation: datasetHash(data.validation) },
      counts: { train: data.train.count, validation: data.validation.count }, localData: { train: false, validation: false },
    });
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(server, 'listening');
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // Per frame: the first connection gets the welcome and the frame; a second one is the relay rejoining.
    let round: { frame: FuzzFrame; connections: number; closed: (code: number) => void; rejoined: () => void } | undefined;
    server.on('connection', (ws) => {
      ws.on('error', () => undefined);
      const r = round!;
      if (++r.connections > 1) return r.rejoined();
      ws.once('message', () => {
        ws.send(welcome);
        ws.send(r.frame.data, { binary: typeof r.frame.data !== 'string' });
      });
      ws.on('close', (code) => r.closed(code));
    });
    const expected = (f: FuzzFrame): number => {
      if (typeof f.data === 'string') return CloseCode.PROTOCOL;
      try {
        // Anything but stop is a violation here: a second welcome, or work at weights the relay lacks.
        return decode(f.data, 'coordinator').type === MessageType.STOP ? NORMAL_CLOSURE : CloseCode.PROTOCOL;
      } catch (err) {
        return isFlockError(err, ErrorCode.PROTOCOL_VERSION) ? CloseCode.PROTOCOL_VERSION : CloseCode.PROTOCOL;
      }
    };
    const fastRejoin = { initialMs: 1, factor: 1, maxMs: 1, jitter: 0 };
    try {
      for (const [i, f] of frames.entries()) {
        const r = { frame: f, connections: 0, closed: (_code: number): void => undefined, rejoined: (): void => undefined };
        const closed = new Promise<number>((resolve) => { r.closed = resolve; });
        const rejoined = new Promise<void>((resolve) => { r.rejoined = resolve; });
        round = r;
        const relay = new Relay({ url, name: `fuzzed-${i}`, pool: { port: 0 }, backoff: fastRejoin }, { logger: silentLogger(), clock: systemClock, socket: nodeSocketFactory({}) });
        const outcome = relay.run().then(() => 'stopped', (err: unknown) => (isFlockError(err) ? err.code : String(err)));
        const code = await closed;
        const want = expected(f);
        assert.equal(code, want, `frame ${i} (${f.kind}): upstream saw close ${code}, expected ${want}`);
        if (want === CloseCode.PROTOCOL) {
          // A garbled or impossible frame is no reason to leave: the relay comes back.
          await rejoined;
          await relay.close();
          assert.equal(await outcome, 'stopped', `frame ${i} (${f.kind}): relay closed after rejoining`);
        } else {
          assert.equal(await outcome, want === NORMAL_CLOSURE ? 'stopped' : ErrorCode.PROTOCOL_VERSION, `frame ${i} (${f.kind}): relay ended`);
          assert.equal(r.connections, 1, `frame ${i} (${f.kind}): the relay did not come back`);
        }
      }
    } finally {
      server.clients.forEach((ws) => ws.terminate());
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
