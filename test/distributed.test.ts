// The WorkerPool with real sockets and real worker processes: learning, bit-identical
// results whatever the number of workers, exact validation counts, surviving a killed
// worker, rejecting bad workers and tokens, and workers rejoining by themselves.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import type { Logger } from 'pino';
import { generate as selfSigned } from 'selfsigned';
import WebSocket, { WebSocketServer } from 'ws';
import type { Executor } from '../coordinator/executor.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import type { PoolOptions } from '../coordinator/pool-options.js';
import { checkGradient } from '../coordinator/result-check.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import type { TrainResult } from '../coordinator/trainer.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import { systemClock } from '../shared/clock.js';
import { subset } from '../shared/data/cifar.js';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { initialState, modelSpec, type ModelSpec } from '../shared/models/spec.js';
import { CloseCode, MessageType, decode, encode, type AssignMessage, type CoordinatorMessage, type GradientMessage } from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import { reduceStep } from '../shared/training/reduce.js';
import { chunk, dropoutSeed, validationChunks } from '../shared/training/schedule.js';
import { findWebgpuAdapter } from '../shared/backends/webgpu.js';
import { backoffDelay, BACKOFF_DEFAULTS } from '../worker/backoff.js';
import { Worker } from '../worker/worker.js';
import { reap, spawnWorker, type Proc } from './child-procs.js';
import { assertCloseState, sameState, trainInProcess, trainThenStop, trainWith, useTrainingData, type RunSizes } from './reference-run.js';
import { silentLogger } from './helpers.js';
import { LogRecorder } from './log-recorder.js';

describe('distributed training over WebSockets', () => {
  const data = useTrainingData('flock-dist-', { trainPerFile: 120, testCount: 300, seed: 11 });

  function listen(config: TrainConfig, logger: Logger = silentLogger(), opts: Parameters<typeof WorkerPool.listen>[0] = {}): Promise<WorkerPool> {
    return WorkerPool.listen({ port: 0, ...opts }, { logger, clock: systemClock, model: modelSpec(config.model), config, train: data.train, validation: data.validation });
  }

  const sizes = (trainCount: number, validationCount: number): RunSizes => ({ trainCount, validationCount, evalChunk: 50 });
  const runLocal = (config: TrainConfig, trainCount: number, validationCount: number): Promise<TrainResult> => trainInProcess(data, config, sizes(trainCount, validationCount));

  /**
   * Trains with `n` spawned workers (on `backends[i]`, default wasm); `wrap` may intercept
   * the pool (to inject faults).
   */
  async function runDistributed(config: TrainConfig, n: number, trainCount: number, validationCount: number, logger?: Logger, wrap?: (pool: WorkerPool, children: Proc[]) => Executor, backends: string[] = []): Promise<TrainResult> {
    const pool = await listen(config, logger);
    const children = Array.from({ length: n }, (_, i) => spawnWorker(pool.url, `w${i + 1}`, { backend: backends[i] ?? 'wasm' }));
    return trainThenStop(pool, children, async () => {
      await pool.waitForWorkers(n);
      return trainWith(config, wrap ? wrap(pool, children) : pool, sizes(trainCount, validationCount));
    });
  }

  it('(a) two worker processes train two epochs to over 90 % validation accuracy', async () => {
    const config = resolveTrainConfig({ epochs: 2, batchSize: 32, microBatch: 16, lr: 0.05, seed: 1 }, 2);
    const result = await runDistributed(config, 2, data.train.count, data.validation.count);
    assert.equal(result.completed, true);
    assert.equal(result.history.length, 2);
    assert.equal(result.history[1]!.workers, 2);
    assert.ok(result.history[1]!.valAccuracy > 0.9, `validation accuracy ${result.history[1]!.valAccuracy}`);
  });

  it('(b) weights after K steps are bit-identical with 1, 2 and 3 workers and in-process', async () => {
    const config = resolveTrainConfig({ model: 'net-batchnorm', epochs: 1, batchSize: 32, microBatch: 8, lr: 0.05, momentum: 0.9, seed: 5 }, 1);
    const steps = 3;
    const reference = await runLocal(config, steps * 32, 40);
    assert.equal(reference.globalStep, steps);
    assert.ok(!sameState(reference.state, initialState(modelSpec(config.model), config.seed)), 'training changed the weights');
    for (const n of [1, 2, 3]) {
      const result = await runDistributed(config, n, steps * 32, 40);
      assert.ok(sameState(result.state, reference.state), `${n} worker(s): weights differ from the in-process run`);
      assert.deepEqual(result.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]), reference.history.map((h) => [h.trainLoss, h.valLoss, h.valAccuracy]));
    }
  });

  it('(b2) a mixed fleet (wasm + webgpu, or wasm + cpu without an adapter) ends within 1e-4 of the in-process weights', async (t) => {
    // Different backends round differently, so the weights are close, not bit-identical.
    const other = await findWebgpuAdapter().then(() => 'webgpu', () => 'cpu');
    t.diagnostic(`fleet: wasm + ${other}`);
    const config = resolveTrainConfig({ model: 'net', epochs: 1, batchSize: 16, microBatch: 8, lr: 0.05, momentum: 0.9, seed: 6 }, 2);
    const steps = 3;
    const reference = await runLocal(config, steps * 16, 16);
    const result = await runDistributed(config, 2, steps * 16, 16, undefined, undefined, ['wasm', other]);
    assert.equal(result.globalStep, steps);
    assertCloseState(result.state, reference.state, 1e-4, 1e-7);
    assert.ok(Math.abs(result.history[0]!.trainLoss - reference.history[0]!.trainLoss) <= 1e-4 * reference.history[0]!.trainLoss);
  });

  it('(b3) --wire-precision float16 (lossy, opt-in): 2 workers train; weights close to, but not the bits of, the float32 run', async () => {
    const base = { model: 'net', epochs: 1, batchSize: 16, microBatch: 8, lr: 0.05, momentum: 0.9, seed: 6 } as const;
    const steps = 3;
    const reference = await runLocal(resolveTrainConfig(base, 2), steps * 16, 16);
    const result = await runDistributed(resolveTrainConfig({ ...base, wirePrecision: 'float16' }, 2), 2, steps * 16, 16);
    assert.equal(result.globalStep, steps);
    assert.ok(!sameState(result.state, reference.state), 'float16 on the wire rounds: the weights are not bit-identical');
    assertCloseState(result.state, reference.state, 5e-3, 1e-5);
    // A float16 gradient is refused in a float32 run, whatever its values.
    const model = modelSpec('net');
    const half: GradientMessage = { type: MessageType.GRADIENT, step: 0, microBatch: 0, grads: model.params.map((p) => new Uint8Array(p.size * 2)), half: true, lossSum: 1, correct: 0, count: 4, batchStats: [], computeMs: 1 };
    assert.throws(() => checkGradient(half, model, 4), (err: unknown) => isFlockError(err, ErrorCode.BAD_GRADIENT) && /float16, but this run's wire precision is float32/.test(err.message));
    assert.equal(checkGradient(half, model, 4, undefined, 'float16').grads[0]![0], 0);
  });

  it('(c) the averaged gradient of micro-batches equals the gradient of their union', async () => {
    const model = modelSpec('net');
    const runtime = new ModelRuntime(data.backend, model);
    try {
      runtime.setState(initialState(model, 9));
      const indices = Uint32Array.from({ length: 48 }, (_, i) => (i * 7) % data.train.count);
      const parts = [];
      for (const mb of chunk(indices, 12)) parts.push(await runtime.gradients(subset(data.train, mb.indices), dropoutSeed(9, 0, mb.id)));
      const reduced = reduceStep(parts);
      const whole = await runtime.gradients(subset(data.train, indices), 0);
      whole.grads.forEach((g, k) => {
        const mean = g.map((v) => v / indices.length);
        let diff = 0;
        let norm = 0;
        mean.forEach((v, i) => {
          diff += (v - reduced.grads[k]![i]!) ** 2;
          norm += v * v;
        });
        assert.ok(Math.sqrt(diff) <= 1e-5 * Math.sqrt(norm), `${model.params[k]!.name}: relative error ${Math.sqrt(diff / norm)}`);
      });
    } finally {
      runtime.dispose();
    }
  });

  it('(d) validation over workers counts each image exactly once and matches in-process evaluation', async () => {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32, seed: 2 }, 2);
    const rec = new LogRecorder();
    const logger = rec.logger();
    const pool = await listen(config, logger);
    // In-process workers: one ships images, one has an identical local copy (none shipped).
    const workers = [
      new Worker({ url: pool.url, name: 'remote-data' }, { logger: silentLogger(), backend: data.backend }),
      new Worker({ url: pool.url, name: 'local-data', localData: { train: data.train, validation: data.validation } }, { logger: silentLogger(), backend: data.backend }),
    ];
    const runs = workers.map((w) => w.run());
    const runtime = new ModelRuntime(data.backend, modelSpec(config.model));
    try {
      await pool.waitForWorkers(2);
      const joined = await rec.next((e) => e.event === 'worker_joined' && e.workerName === 'local-data');
      assert.deepEqual(joined.localData, { train: true, validation: true });
      const weights = { version: 0, state: initialState(modelSpec(config.model), 2) };
      const chunks = validationChunks(data.validation.count, 37);
      const results = await pool.evaluate('validation', chunks, weights);
      assert.equal(results.length, chunks.length);
      assert.equal(results.reduce((n, r) => n + r.count, 0), data.validation.count);
      const local = await new LocalExecutor(runtime, data.train, data.validation, 2, systemClock).evaluate('validation', chunks, weights);
      assert.deepEqual(results, local);
      // Every chunk went to exactly one worker, both workers took part.
      const assigned = rec.events.filter((e) => e.event === 'assigned' && e.kind === 'evaluate');
      assert.deepEqual(assigned.flatMap((e) => e.units as number[]).sort((a, b) => a - b), chunks.map((c) => c.id));
      assert.equal(new Set(assigned.map((e) => e.workerId)).size, 2);
    } finally {
      await pool.close();
      const outcomes = await Promise.all(runs);
      for (const o of outcomes) assert.equal(o.reason, 'training complete');
      runtime.dispose();
    }
  });

  it('(e) a worker killed with SIGKILL mid-run: training completes with the undisturbed weights', async () => {
    const config = resolveTrainConfig({ model: 'net-dropout', epochs: 1, batchSize: 32, microBatch: 8, lr: 0.05, seed: 7 }, 2);
    const steps = 4;
    const reference = await runLocal(config, steps * 32, 40);
    const rec = new LogRecorder();
    const logger = rec.logger();
    let victim: Proc | undefined;
    const result = await runDistributed(config, 2, steps * 32, 40, logger, (pool, children) => ({
      workerCount: () => pool.workerCount(),
      evaluate: (split, chunks, weights) => pool.evaluate(split, chunks, weights),
      gradients: (work, weights) => {
        const pending = pool.gradients(work, weights);
        // Step 2's micro-batches are out on both workers now; one of them dies with them.
        if (work.globalStep === 2) {
          victim = children[0]!;
          victim.proc.kill('SIGKILL');
        }
        return pending;
      },
    }));
    assert.equal(result.completed, true);
    assert.equal(result.globalStep, steps);
    assert.equal((await victim!.exited).signal, 'SIGKILL');
    const left = await rec.next((e) => e.event === 'worker_left');
    assert.ok(Array.isArray(left.reassigned) && left.reassigned.length > 0, `reassigned ${JSON.stringify(left.reassigned)}`);
    assert.ok(sameState(result.state, reference.state), 'final weights differ from the undisturbed run');
  });

  it('(f) with a token set, a client without it gets 401 and one with it joins', async () => {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1);
    const pool = await listen(config, silentLogger(), { token: 's3cret' });
    const child = spawnWorker(pool.url, 'with-token', { token: 's3cret' });
    try {
      for (const headers of [undefined, { Authorization: 'Bearer wrong' }, { Authorization: 's3cret' }]) {
        const ws = new WebSocket(pool.url, { headers });
        ws.on('error', () => undefined);
        const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number; resume(): void }];
        res.resume();
        assert.equal(res.statusCode, 401);
        ws.terminate();
      }
      const noToken = spawnWorker(pool.url, 'no-token');
      const exit = await noToken.exited;
      assert.equal(exit.code, 1);
      assert.match(noToken.output(), /401/);
      await pool.waitForWorkers(1);
      assert.equal(pool.workerCount(), 1);
    } finally {
      await pool.close();
      await reap([child]);
    }
  });

  it('refuses a non-loopback listener without a token unless insecure', async () => {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1);
    await assert.rejects(listen(config, silentLogger(), { host: '0.0.0.0' }), (err: unknown) => isFlockError(err, ErrorCode.INSECURE) && /--token/.test(err.message) && /--insecure/.test(err.message));
    const pool = await listen(config, silentLogger(), { host: '0.0.0.0', insecure: true });
    await pool.close();
  });

  it('closes a worker that sends a bad gradient (4003) and gives its micro-batch to another', async () => {
    // It answers every assignment with NaN gradients.
    const { code, left } = await stepWithBadClient(4, {}, 'liar', {
      autoPong: true,
      onAssign: (ws, msg, model) => {
        for (const mb of msg.microBatches) {
          ws.send(encode({
            type: MessageType.GRADIENT, step: msg.step, microBatch: mb.id, grads: model.params.map((p) => float32ToBytes(new Float32Array(p.size).fill(Number.NaN))),
            lossSum: 1, correct: 0, count: mb.indices.byteLength / 4, batchStats: [], computeMs: 1,
          }));
        }
      },
    });
    assert.equal(code, CloseCode.BAD_GRADIENT);
    assert.match(String(left.reason), /NaN/);
  });

  /**
   * One honest in-process worker and one bad client on a pool with `opts`: the client says
   * hello, answers pings only with `autoPong`, and answers assignments only through
   * `onAssign`. Runs one step of 4 micro-batches and checks the results against in-process
   * ones. Returns the bad client's close code and the coordinator's worker_left record for it.
   */
  async function stepWithBadClient(
    seed: number, opts: Partial<PoolOptions>, name: string, client: { autoPong: boolean; onAssign?: (ws: WebSocket, msg: AssignMessage, model: ModelSpec) => void },
  ): Promise<{ code: number; left: Record<string, unknown> }> {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32, microBatch: 8, seed }, 2);
    const rec = new LogRecorder();
    const pool = await listen(config, rec.logger(), opts);
    const honest = new Worker({ url: pool.url, name: 'honest' }, { logger: silentLogger(), backend: data.backend });
    const honestRun = honest.run();
    const runtime = new ModelRuntime(data.backend, modelSpec(config.model));
    try {
      await pool.waitForWorkers(1);
      const bad = new WebSocket(pool.url, { autoPong: client.autoPong });
      const closed = once(bad, 'close');
      bad.on('message', (frame: Buffer) => {
        const msg: CoordinatorMessage = decode(frame, 'coordinator');
        if (msg.type === MessageType.ASSIGN) client.onAssign?.(bad, msg, modelSpec(config.model));
      });
      await once(bad, 'open');
      bad.send(encode({ type: MessageType.HELLO, name, backend: 'cpu', adapter: 'CPU: test' }));
      await pool.waitForWorkers(2);
      const work = { epoch: 0, globalStep: 0, microBatches: chunk(Uint32Array.from({ length: 32 }, (_, i) => i + 32), 8) };
      const weights = { version: 0, state: initialState(modelSpec(config.model), seed) };
      const { results } = await pool.gradients(work, weights);
      const [code] = (await closed) as [number];
      const left = await rec.next((e) => e.event === 'worker_left' && e.workerName === name);
      assert.ok(Array.isArray(left.reassigned) && left.reassigned.length > 0, `reassigned ${JSON.stringify(left.reassigned)}`);
      const local = await new LocalExecutor(runtime, data.train, data.validation, config.seed, systemClock).gradients(work, weights);
      assert.ok(results.every((r, i) => sameState({ params: r.grads, buffers: [] }, { params: local.results[i]!.grads, buffers: [] })));
      return { code, left };
    } finally {
      await pool.close();
      await honestRun;
      runtime.dispose();
    }
  }

  // Each rule is tested with the other one out of reach (an hour), so however slow the machine,
  // only the rule under test can drop the bad client and its close code is known.
  const NEVER_MS = 3_600_000;

  it('drops a worker that stalls past the step timeout (4004) and reassigns its work', async () => {
    const { code, left } = await stepWithBadClient(6, { stepTimeoutMs: 600, heartbeatMs: NEVER_MS }, 'staller', { autoPong: true });
    assert.equal(code, CloseCode.TIMEOUT);
    assert.match(String(left.reason), /no result .* within 600 ms/);
  });

  it('drops a worker that misses heartbeats (connection cut) and reassigns its work', async () => {
    const { code, left } = await stepWithBadClient(7, { stepTimeoutMs: NEVER_MS, heartbeatMs: 100 }, 'deaf', { autoPong: false });
    assert.equal(code, 1006);
    assert.match(String(left.reason), /missed \d+ heartbeats/);
  });

  it('waits while fewer than minWorkers are connected, logging it, and counts the wait', async () => {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 16, microBatch: 8, seed: 8 }, 2);
    const rec = new LogRecorder();
    const logger = rec.logger();
    const pool = await listen(config, logger, { minWorkers: 2, waitLogMs: 50 });
    const workers = [new Worker({ url: pool.url, name: 'first' }, { logger: silentLogger(), backend: data.backend })];
    const runs = [workers[0]!.run()];
    try {
      await pool.waitForWorkers(1);
      const work = { epoch: 0, globalStep: 0, microBatches: chunk(Uint32Array.from({ length: 16 }, (_, i) => i), 8) };
      const pending = pool.gradients(work, { version: 0, state: initialState(modelSpec(config.model), 8) });
      await rec.next((e) => e.event === 'waiting' && e.have === 1 && e.need === 2);
      workers.push(new Worker({ url: pool.url, name: 'second' }, { logger: silentLogger(), backend: data.backend }));
      runs.push(workers[1]!.run());
      const { results, timing } = await pending;
      assert.equal(results.length, 2);
      assert.ok(timing.waitingMs > 0, `waitingMs ${timing.waitingMs}`);
      assert.ok(timing.computeMs > 0 && timing.communicationMs >= 0);
    } finally {
      await pool.close();
      await Promise.all(runs);
    }
  });

  it('closes connections that never say hello or speak another protocol version', async () => {
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1);
    const pool = await listen(config, silentLogger(), { helloTimeoutMs: 200 });
    try {
      const silent = new WebSocket(pool.url);
      const [silentCode] = (await once(silent, 'close')) as [number];
      assert.equal(silentCode, CloseCode.TIMEOUT);
      const old = new WebSocket(pool.url);
      await once(old, 'open');
      old.send(new Uint8Array([0x82, 0xa1, 0x76, 0x00, 0xa1, 0x74, 0x01])); // {v: 0, t: 1}
      const [oldCode, reason] = (await once(old, 'close')) as [number, Buffer];
      assert.equal(oldCode, CloseCode.PROTOCOL_VERSION);
      assert.match(reason.toString(), /protocol version 0/);
      assert.equal(pool.workerCount(), 0);
      // Two workers with the same name are both kept, with distinct ids.
      const welcomes = await Promise.all([0, 1].map(async () => {
        const twin = new WebSocket(pool.url);
        await once(twin, 'open');
        twin.send(encode({ type: MessageType.HELLO, name: 'twin', backend: 'cpu', adapter: 'CPU: test' }));
        const [data] = (await once(twin, 'message')) as [Buffer];
        return decode(data, 'coordinator');
      }));
      assert.equal(pool.workerCount(), 2);
      const ids = welcomes.map((w) => (w.type === MessageType.WELCOME ? w.workerId : -1));
      assert.ok(ids[0] !== ids[1] && !ids.includes(-1), `ids ${ids.join(', ')}`);
    } finally {
      await pool.close();
    }
  });

  it('a worker rejoins by itself after the connection drops or the coordinator goes silent', async () => {
    // A stand-in coordinator: the first connection dies without a close frame, the second
    // is welcomed and then never pinged (the coordinator hangs)...
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1);
    const fake = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(fake, 'listening');
    const port = (fake.address() as { port: number }).port;
    let connections = 0;
    fake.on('connection', (ws) => {
      const n = ++connections;
      ws.once('message', () => {
        if (n === 1) return ws.terminate();
        ws.send(encode({
          type: MessageType.WELCOME, workerId: 1, config, heartbeatMs: 30, hashes: { train: 'a'.repeat(64), validation: 'a'.repeat(64) },
          counts: { train: data.train.count, validation: data.validation.count }, localData: { train: false, validation: false },
        }));
      });
    });
    const rec = new LogRecorder();
    const logger = rec.logger();
    const worker = new Worker({ url: `ws://127.0.0.1:${port}`, name: 'phoenix', backoff: { initialMs: 20, factor: 2, maxMs: 100, jitter: 0.2 } }, { logger, backend: data.backend });
    const run = worker.run();
    await rec.next((e) => e.event === 'reconnecting' && /1006/.test(String(e.reason)));
    await rec.next((e) => e.event === 'reconnecting' && /no heartbeat/.test(String(e.reason)));
    fake.clients.forEach((ws) => ws.terminate());
    await new Promise<void>((resolve) => fake.close(() => resolve()));
    // ...and a real one comes up on the same port.
    const pool = await listen(config, silentLogger(), { port });
    try {
      await pool.waitForWorkers(1);
    } finally {
      await pool.close();
    }
    assert.equal((await run).reason, 'training complete');
  });

  it('serves wss:// with TLS; a worker trusts it only with the CA given', async () => {
    // The certificate is made here (no openssl needed), so this test never skips.
    const pems = await selfSigned([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec', curve: 'P-256', algorithm: 'sha256', notAfterDate: new Date(Date.now() + 86_400_000),
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }, { type: 2, value: 'localhost' }] }],
    });
    const [cert, key] = [Buffer.from(pems.cert), Buffer.from(pems.private)];
    const config = resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1);
    const pool = await listen(config, silentLogger(), { tls: { cert, key }, token: 'tls-token' });
    try {
      assert.match(pool.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
      const untrusting = new Worker({ url: pool.url, name: 'no-ca', token: 'tls-token' }, { logger: silentLogger(), backend: data.backend });
      await assert.rejects(untrusting.run(), (err: unknown) => isFlockError(err, ErrorCode.UNAUTHORIZED) && /--ca/.test(err.message));
      const trusting = new Worker({ url: pool.url, name: 'ca', token: 'tls-token', ca: cert }, { logger: silentLogger(), backend: data.backend });
      const run = trusting.run();
      await pool.waitForWorkers(1);
      await pool.close();
      assert.equal((await run).reason, 'training complete');
    } finally {
      await pool.close();
    }
  });

  it('backs off exponentially with jitter up to the cap', () => {
    const mid = (): number => 0.5;
    assert.deepEqual([0, 1, 2, 3, 5, 6, 10].map((a) => backoffDelay(a, BACKOFF_DEFAULTS, mid)), [250, 500, 1000, 2000, 8000, 10000, 10000]);
    assert.equal(backoffDelay(0, BACKOFF_DEFAULTS, () => 0), 200);
    assert.equal(backoffDelay(10, BACKOFF_DEFAULTS, () => 0.999), 10000);
  });
});
