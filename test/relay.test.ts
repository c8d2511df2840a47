// Relays on real processes: the coordinator's pool in this process, `coordinator relay`
// processes joined to it (one or two levels deep) and worker processes joined to the relays.
// Weights after K steps must be bit-identical to the in-process run with the same reduce
// group, whatever the topology, and when a relay dies mid-step holding groups.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { Logger } from 'pino';
import type { Executor } from '../coordinator/executor.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import { Trainer, type TrainResult } from '../coordinator/trainer.js';
import type { PoolOptions } from '../coordinator/pool-options.js';
import { Arbiter } from '../coordinator/arbiter.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { Relay } from '../coordinator/relay.js';
import { WorkerPool, type PoolDeps } from '../coordinator/worker-pool.js';
import { writeSelfSignedCert } from '../scripts/netsim/certs.js';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock } from '../shared/clock.js';
import { datasetHash, loadCifar, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { CloseCode, MessageType, NORMAL_CLOSURE, decode, encode } from '../shared/protocol.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { nodeSocketFactory } from '../worker/node-socket.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { initialState, modelSpec, type ModelState } from '../shared/models/spec.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import { reap, spawnWorker, startRelay, type Proc } from './child-procs.js';
import { silentLogger, trainingBackend } from './helpers.js';
import { LogRecorder } from './log-recorder.js';
import { fuzzFrames, type FuzzFrame } from './fault-tools.js';

function stateBytes(s: ModelState): Buffer {
  return Buffer.concat([...s.params, ...s.buffers].map((t) => float32ToBytes(t)));
}

describe('relays: exact hierarchical aggregation', () => {
  let backend: ComputeBackend;
  let dataDir: string;
  let train: Dataset;
  let validation: Dataset;

  before(async () => {
    backend = await trainingBackend();
    dataDir = await mkdtemp(join(tmpdir(), 'flock-relay-'));
    await writeSyntheticCifar(dataDir, { trainPerFile: 120, testCount: 300, seed: 12 });
    ({ train, validation } = await loadCifar(dataDir));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  const config = resolveTrainConfig({ model: 'net-batchnorm', epochs: 1, batchSize: 32, microBatch: 4, lr: 0.05, momentum: 0.9, seed: 9, reduceGroup: 2 }, 1);
  const steps = 3;

  function runTrainer(executor: Executor): Promise<TrainResult> {
    return new Trainer(config, { executor, logger: silentLogger(), clock: systemClock }, { trainCount: steps * 32, validationCount: 40, evalChunk: 20 }).run();
  }

  let reference: TrainResult | undefined;
  async function local(): Promise<TrainResult> {
    if (reference) return reference;
    const runtime = new ModelRuntime(backend, modelSpec(config.model));
    try {
      reference = await runTrainer(new LocalExecutor(runtime, train, validation, config.seed, systemClock));
    } finally {
      runtime.dispose();
    }
    assert.ok(!stateBytes(reference.state).equals(stateBytes(initialState(modelSpec(config.model), config.seed))), 'training changed the weights');
    return reference;
  }

  /**
   * Trains through the pool once `expected` connections joined it; `build` starts the relays
   * and workers (pushing every process to `procs`). `wrap` may intercept the pool.
   */
  async function distributed(
    build: (url: string, procs: Proc[]) => Promise<void>, expected: number, logger: Logger = silentLogger(), wrap?: (pool: WorkerPool, procs: Proc[]) => Executor,
    orphans: ReadonlySet<string> = new Set(), poolOpts: Partial<PoolOptions> = {}, verify?: PoolDeps['verify'],
  ): Promise<TrainResult> {
    const pool = await WorkerPool.listen({ port: 0, ...poolOpts }, { logger, clock: systemClock, model: modelSpec(config.model), config, train, validation, ...(verify ? { verify } : {}) });
    const procs: Proc[] = [];
    try {
      await build(pool.url, procs);
      await pool.waitForWorkers(expected);
      const result = await runTrainer(wrap ? wrap(pool, procs) : pool);
      await pool.close();
      // Relays pass the stop on to their workers; everyone still running exits 0 (but the
      // workers of a killed relay, which keep trying to rejoin it until reaped).
      const exits = await Promise.all(procs.filter((p) => p.proc.signalCode === null && !orphans.has(p.name)).map(async (p) => ({ name: p.name, ...(await p.exited), out: p.output() })));
      for (const e of exits) assert.equal(e.code, 0, `${e.name} exits 0 on stop: ${e.out.slice(-2000)}`);
      return result;
    } finally {
      await pool.close();
      await reap(procs);
    }
  }

  it('one level: two relays with two and one workers give the in-process weights', async () => {
    const ref = await local();
    const result = await distributed(async (url, procs) => {
      const [a, b] = await Promise.all([startRelay(url, 'relay-a', procs), startRelay(url, 'relay-b', procs)]);
      procs.push(spawnWorker(a.url, 'a1'), spawnWorker(a.url, 'a2'), spawnWorker(b.url, 'b1'));
    }, 2);
    assert.equal(result.globalStep, steps);
    assert.ok(stateBytes(result.state).equals(stateBytes(ref.state)), 'weights through relays differ from the in-process run');
    assert.deepEqual(result.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]), ref.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]));
  });

  it('two levels, next to a direct worker: a relay of two relays, plus one worker on the coordinator', async () => {
    const ref = await local();
    const result = await distributed(async (url, procs) => {
      const top = await startRelay(url, 'relay-top', procs);
      const [l, r] = await Promise.all([startRelay(top.url, 'relay-left', procs), startRelay(top.url, 'relay-right', procs)]);
      procs.push(spawnWorker(l.url, 'l1'), spawnWorker(r.url, 'r1'), spawnWorker(url, 'direct'));
    }, 2);
    assert.ok(stateBytes(result.state).equals(stateBytes(ref.state)), 'weights through two levels of relays differ from the in-process run');
  });

  it('verified (audit rate 1) through relays next to a direct worker: only direct micro-batches are audited, group sums pass the guards, the weights are the in-process ones', async () => {
    const ref = await local();
    const rec = new LogRecorder();
    const runtime = new ModelRuntime(backend, modelSpec(config.model));
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
      }), new Set(), {}, { arbiter: new Arbiter(runtime, { train, validation }, config.seed, backend.name), quarantine, auditRate: 1, auditSeed: 3 });
      assert.ok(stateBytes(result.state).equals(stateBytes(ref.state)), 'verified weights through a relay differ from the in-process run');
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
    assert.ok(stateBytes(result.state).equals(stateBytes(ref.state)), 'weights after a relay died differ from the undisturbed run');
  });

  it('over wss:// with a token: the relay trusts upstream with --ca, serves TLS with the same token; a worker without it gets 401', async () => {
    const ref = await local();
    const token = 'relay-secret';
    const coordCert = await writeSelfSignedCert(dataDir, 'coord', ['127.0.0.1']);
    const relayCert = await writeSelfSignedCert(dataDir, 'relay', ['127.0.0.1']);
    let intruder: Proc | undefined;
    const result = await distributed(async (url, procs) => {
      assert.match(url, /^wss:/);
      const r = await startRelay(url, 'relay-tls', procs, { token, args: ['--ca', coordCert.ca, '--tls-cert', relayCert.cert, '--tls-key', relayCert.key] });
      assert.match(r.url, /^wss:/);
      intruder = spawnWorker(r.url, 'no-token', { args: ['--ca', relayCert.ca] });
      procs.push(intruder, spawnWorker(r.url, 't1', { token, args: ['--ca', relayCert.ca] }), spawnWorker(r.url, 't2', { token, args: ['--ca', relayCert.ca] }));
    }, 1, silentLogger(), undefined, new Set(['no-token']), { token, tls: { cert: await readFile(coordCert.cert), key: await readFile(coordCert.key) } });
    assert.ok(stateBytes(result.state).equals(stateBytes(ref.state)), 'weights through a TLS relay differ from the in-process run');
    const out = await intruder!.exited;
    assert.notEqual(out.code, 0);
    assert.match(intruder!.output(), /401/);
  });

  it('fuzzed frames from upstream: the relay closes with the code each calls for, or stops on a stop', async () => {
    const model = modelSpec(config.model);
    const frames = fuzzFrames(0x7e1a9, 44, model);
    const welcome = encode({
      type: MessageType.WELCOME, workerId: 1, config, heartbeatMs: 60_000, hashes: { train: datasetHash(train), validation: datasetHash(validation) },
      counts: { train: train.count, validation: validation.count }, localData: { train: false, validation: false },
    });
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(server, 'listening');
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    let frame: FuzzFrame | undefined;
    const closed: number[] = [];
    server.on('connection', (ws) => {
      ws.on('error', () => undefined);
      ws.once('message', () => {
        ws.send(welcome);
        ws.send(frame!.data, { binary: typeof frame!.data !== 'string' });
      });
      ws.on('close', (code) => closed.push(code));
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
    try {
      for (const [i, f] of frames.entries()) {
        frame = f;
        const before = closed.length;
        const relay = new Relay({ url, name: `fuzzed-${i}`, pool: { port: 0 } }, { logger: silentLogger(), clock: systemClock, socket: nodeSocketFactory({}) });
        const outcome = await relay.run().then(() => 'stopped', (err: unknown) => (isFlockError(err) ? err.code : String(err)));
        while (closed.length === before) await new Promise((resolve) => setImmediate(resolve));
        const want = expected(f);
        assert.equal(closed[before], want, `frame ${i} (${f.kind}): upstream saw close ${closed[before]}, expected ${want} (relay: ${outcome})`);
        assert.equal(outcome === 'stopped', want === NORMAL_CLOSURE, `frame ${i} (${f.kind}): relay ended ${outcome}`);
      }
    } finally {
      server.clients.forEach((ws) => ws.terminate());
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
