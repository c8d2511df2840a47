// The worker pool's limits on real sockets: connection caps and HTTP timeouts against a
// flood, summarised refusals, cleartext refusal, a stalling token holder, a reader that does
// not read, and images that are not sent again when a worker reconnects.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Logger } from 'pino';
import type { PoolOptions } from '../coordinator/pool-options.js';
import { resolvePoolOptions } from '../coordinator/pool-options.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { initialState, modelSpec, type ModelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { planEpoch, validationChunks } from '../shared/training/schedule.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import { Worker } from '../worker/worker.js';
import { helloFrame, wsFrame } from './fault-tools.js';
import { LogRecorder } from './log-recorder.js';
import WebSocket from 'ws';
import { silentLogger, trainingBackend } from './helpers.js';

/** An upgrade request with `authorization`; resolves with the HTTP status (0 if cut before one). */
function upgradeStatus(url: string, authorization: string): Promise<number> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = '';
  socket.on('error', () => undefined);
  socket.setEncoding('latin1').on('data', (d: string) => (received += d));
  socket.on('connect', () => socket.write(
    `GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${Buffer.alloc(16, 1).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nAuthorization: ${authorization}\r\n\r\n`));
  return new Promise((resolve) => socket.once('close', resolve)).then(() => Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0));
}

/** A TCP relay in front of `target` that the test can cut; counts bytes from the server per connection. */
async function relay(target: string): Promise<{ url: string; fromServer: number[]; cut: () => void; close: () => Promise<void> }> {
  const { hostname, port } = new URL(target);
  const pairs = new Set<[Socket, Socket]>();
  const fromServer: number[] = [];
  const server = createServer((client) => {
    const k = fromServer.push(0) - 1;
    const upstream = connect(Number(port), hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    for (const s of pair) s.on('error', () => undefined).on('close', () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    });
    upstream.on('data', (d: Buffer) => (fromServer[k]! += d.byteLength));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const cut = (): void => pairs.forEach(([a, b]) => (a.destroy(), b.destroy()));
  const close = (): Promise<void> => {
    cut();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, fromServer, cut, close };
}

const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));

const FAST_BACKOFF = { initialMs: 20, factor: 2, maxMs: 200, jitter: 0.2 };

/** Connections that say hello, answer pings, never return a result, and come back at once when dropped. */
class Stallers {
  private readonly open = new Set<WebSocket>();
  private stopped = false;
  /** Connections opened so far. */
  connections = 0;

  constructor(private readonly url: string, private readonly headers: Record<string, string> = {}) {}

  start(): void {
    if (this.stopped) return;
    this.connections++;
    const ws = new WebSocket(this.url, { headers: this.headers, perMessageDeflate: false });
    this.open.add(ws);
    ws.on('error', () => undefined);
    ws.on('open', () => ws.send(helloFrame('staller')));
    ws.on('close', () => {
      this.open.delete(ws);
      this.start();
    });
  }

  /** No more reconnects; closes what is open. */
  stop(): void {
    this.stopped = true;
    for (const ws of this.open) ws.terminate();
  }
}

describe('worker pool limits', () => {
  let backend: ComputeBackend;
  let dataDir: string;
  let train: Dataset;
  let validation: Dataset;
  let config: TrainConfig;
  let model: ModelSpec;

  before(async () => {
    backend = await trainingBackend();
    dataDir = await mkdtemp(join(tmpdir(), 'flock-limits-'));
    await writeSyntheticCifar(dataDir, { trainPerFile: 24, testCount: 40, seed: 21 });
    ({ train, validation } = await loadCifar(dataDir));
    config = resolveTrainConfig({ epochs: 1, batchSize: 32, microBatch: 8, seed: 3 }, 1);
    model = modelSpec(config.model);
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  function listen(logger: Logger, opts: Partial<PoolOptions> = {}): Promise<WorkerPool> {
    return WorkerPool.listen({ port: 0, ...opts }, { logger, clock: systemClock, model, config, train, validation });
  }

  function worker(url: string, name: string, opts: { token?: string } = {}): Worker {
    return new Worker({ url, name, token: opts.token, backoff: FAST_BACKOFF, giveUpAfterMs: 10 * 60_000 }, { logger: silentLogger(), backend });
  }

  /** One training step of the first epoch through `pool`. */
  async function oneStep(pool: WorkerPool, step = 0): Promise<number> {
    const perEpoch = Math.floor(train.count / config.batchSize);
    const epoch = Math.floor(step / perEpoch);
    const microBatches = planEpoch(train.count, config.batchSize, config.microBatch, config.seed, epoch).microBatches(step % perEpoch);
    const { results } = await pool.gradients({ epoch, globalStep: step, microBatches }, { version: step, state: initialState(model, config.seed) });
    return results.reduce((n, r) => n + r.count, 0);
  }

  it('a flood of idle and unauthenticated sockets does not keep a worker out; refusals are summarised', async () => {
    const rec = new LogRecorder();
    const pool = await listen(rec.logger('info'), { token: 'secret', maxConnections: 40, maxPending: 8, headersTimeoutMs: 1_000, helloTimeoutMs: 1_000, rejectLogMs: 10 * 60_000 });
    const { hostname, port } = new URL(pool.url);
    const idle: Socket[] = [];
    let w: Worker | undefined;
    let run: Promise<unknown> = Promise.resolve();
    try {
      // 50 sockets that never send a byte: 10 over --max-connections, the rest over --max-pending
      // or cut by the headers timeout. The server closes every one of them.
      const idleClosed: Promise<unknown>[] = [];
      for (let i = 0; i < 50; i++) {
        const s = connect(Number(port), hostname);
        s.on('error', () => undefined);
        idleClosed.push(new Promise((resolve) => s.once('close', resolve)));
        idle.push(s);
      }
      // 20 upgrade requests with a wrong token, at the same time.
      const intruders = Promise.all(Array.from({ length: 20 }, () => upgradeStatus(pool.url, 'Bearer wrong')));
      w = worker(pool.url, 'legit', { token: 'secret' });
      run = w.run();
      await pool.waitForWorkers(1);
      assert.equal(await oneStep(pool), config.batchSize, 'the legitimate worker trains');
      await Promise.all(idleClosed);
      const outcomes = await intruders;
      assert.ok(outcomes.every((status) => status === 401 || status === 0), `an intruder gets 401 or is cut before its request is read (${outcomes.join(' ')})`);
      const refused401 = outcomes.filter((status) => status === 401).length;
      await pool.close();
      await run;
      const unauthorized = rec.filter((e) => e.event === 'unauthorized');
      assert.equal(unauthorized.reduce((n, e) => n + (e.count as number), 0), refused401, 'every 401 is counted');
      assert.ok(unauthorized.length <= 2, `401s are summarised, not logged one by one (${unauthorized.length} records)`);
      const refused = rec.filter((e) => e.event === 'connection_refused').reduce((n, e) => n + (e.count as number), 0);
      assert.ok(refused >= 10, `sockets over the caps are refused and counted (${refused})`);
      assert.ok(rec.filter((e) => e.event === 'connection_refused').length <= 2, 'refusals are summarised');
    } finally {
      for (const s of idle) s.destroy();
      w?.close();
      await run.catch(() => undefined);
      await pool.close();
    }
  });

  it('refuses a token on a non-loopback host without TLS unless --insecure (options and CLI)', async () => {
    const cleartext = (err: unknown): boolean => isFlockError(err, ErrorCode.INSECURE) && /clear text/.test(err.message) && /--tls-cert/.test(err.message) && /--insecure/.test(err.message);
    assert.throws(() => resolvePoolOptions({ host: '0.0.0.0', token: 't' }), cleartext);
    assert.throws(() => resolvePoolOptions({ host: '192.168.1.7', token: 't' }), cleartext);
    resolvePoolOptions({ host: '0.0.0.0', token: 't', insecure: true });
    resolvePoolOptions({ host: '0.0.0.0', token: 't', tls: { cert: 'c', key: 'k' } });
    resolvePoolOptions({ host: '127.0.0.1', token: 't' });
    resolvePoolOptions({ host: '::1', token: 't' });
    await assert.rejects(listen(silentLogger(), { host: '0.0.0.0', token: 't' }), cleartext);

    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'FLOCK_TOKEN' && k !== 'FLOCK_DATA_DIR'));
    const child = spawn(process.execPath, [COORDINATOR_CLI, 'start', '--host', '0.0.0.0', '--token', 'secret', '--data-dir', dataDir, '--epochs', '1', '--checkpoint-dir', join(dataDir, 'ckpt')], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 1, stderr);
    assert.match(stderr, /clear text.*--tls-cert.*--insecure.*\[ERR_INSECURE\]/s);
  });

  it('a worker that reconnects keeps its images: they are not sent again', async () => {
    const rec = new LogRecorder();
    const pool = await listen(rec.logger('debug'));
    const proxy = await relay(pool.url);
    const w = worker(proxy.url, 'keeper');
    const run = w.run();
    const weights = { version: 0, state: initialState(model, config.seed) };
    const epoch = async (): Promise<void> => {
      const plan = planEpoch(train.count, config.batchSize, config.microBatch, config.seed, 0);
      for (let step = 0; step < plan.stepsPerEpoch; step++) await pool.gradients({ epoch: 0, globalStep: step, microBatches: plan.microBatches(step) }, weights);
      await pool.evaluate('validation', validationChunks(validation.count, 16), weights);
    };
    const imagesSent = (workerId: number): number => rec.filter((e) => e.event === 'assigned' && e.workerId === workerId).reduce((n, e) => n + (e.imagesSent as number), 0);
    try {
      await pool.waitForWorkers(1);
      await epoch();
      const used = Math.floor(train.count / config.batchSize) * config.batchSize + validation.count;
      assert.equal(imagesSent(1), used, 'the first connection gets every image it needs, once');
      proxy.cut();
      const joined = await rec.next((e) => e.event === 'worker_joined' && e.workerId === 2);
      assert.deepEqual(joined.imagesHeld, { train: used - validation.count, validation: validation.count }, 'the worker says what it kept');
      await epoch();
      assert.equal(imagesSent(2), 0, 'no image is sent again after the reconnect');
      assert.equal(proxy.fromServer.length, 2);
      assert.ok(proxy.fromServer[1]! < used * IMAGE_BYTES, `the second connection carried ${proxy.fromServer[1]} bytes, less than the images (${used * IMAGE_BYTES})`);
      assert.ok(proxy.fromServer[0]! > used * IMAGE_BYTES, 'the first one carried them');
      await pool.close();
      await run;
    } finally {
      w.close();
      await run.catch(() => undefined);
      await pool.close();
      await proxy.close();
    }
  });

  it('backpressure: a worker that stops reading is dropped instead of being queued data without bound', async () => {
    // A validation split of ~3,500 images (~10 MB): the unread share is far more than the socket takes.
    const bigDir = await mkdtemp(join(tmpdir(), 'flock-limits-big-'));
    await writeSyntheticCifar(bigDir, { trainPerFile: 8, testCount: 4000, seed: 22 });
    const big = await loadCifar(bigDir);
    const rec = new LogRecorder();
    const maxBufferedBytes = 2 ** 20;
    // Beats of 500 ms: the reader's event loop, blocked while it evaluates a 500-image
    // chunk, must answer pings in time even on a loaded machine (with 100 ms beats it could
    // miss three in a row there and be dropped).
    const pool = await WorkerPool.listen({ port: 0, heartbeatMs: 500, maxBufferedBytes }, { logger: rec.logger('info'), clock: systemClock, model, config, train: big.train, validation: big.validation });
    const { hostname, port } = new URL(pool.url);
    // A client that upgrades, says hello and then never reads another byte.
    const deaf = connect(Number(port), hostname);
    deaf.on('error', () => undefined);
    const deafClosed = new Promise((resolve) => deaf.once('close', resolve));
    let head = '';
    const upgraded = new Promise<void>((resolve) => deaf.setEncoding('latin1').on('data', (d: string) => {
      head += d;
      if (head.includes('\r\n\r\n')) resolve();
    }));
    deaf.write(`GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${Buffer.alloc(16, 2).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await upgraded;
    assert.match(head, /^HTTP\/1\.1 101/);
    deaf.removeAllListeners('data');
    deaf.pause();
    deaf.write(wsFrame(0x2, helloFrame('deaf')));
    await rec.next((e) => e.event === 'worker_joined' && e.workerName === 'deaf');
    // The reader has its own copy of the data: its frames are small, so only the deaf one's pile up.
    const w = new Worker({ url: pool.url, name: 'reader', localData: big, backoff: FAST_BACKOFF }, { logger: silentLogger(), backend });
    const run = w.run();
    try {
      await pool.waitForWorkers(2);
      const chunks = validationChunks(big.validation.count, 500);
      const results = await pool.evaluate('validation', chunks, { version: 0, state: initialState(model, config.seed) });
      assert.equal(results.reduce((n, r) => n + r.count, 0), big.validation.count, 'every chunk evaluated, the unread ones elsewhere');
      const left = await rec.next((e) => e.event === 'worker_left' && e.workerName === 'deaf');
      assert.match(String(left.reason), /not reading: \d+ bytes queued/);
      assert.ok(Number(/(\d+) bytes/.exec(String(left.reason))![1]) > maxBufferedBytes);
      assert.ok((left.reassigned as number[]).length > 0, 'its chunks went to the reader');
      deaf.resume();
      await deafClosed;
      await pool.close();
      await run;
    } finally {
      deaf.destroy();
      w.close();
      await run.catch(() => undefined);
      await pool.close();
      await rm(bigDir, { recursive: true, force: true });
    }
  });

  it('a token holder whose connections answer pings but never return results: its units finish elsewhere, each retried at most once', async () => {
    const rec = new LogRecorder();
    const stepTimeoutMs = 10 * 60_000;
    // The ceiling is far away: only the deadline measured from the fleet's pace can end a stall.
    const pool = await listen(rec.logger('debug'), { token: 'secret', stepTimeoutMs, stepTimeoutFloorMs: 3_000, deadlineFactor: 4 });
    const w = worker(pool.url, 'honest', { token: 'secret' });
    const run = w.run();
    const stallers = new Stallers(pool.url, { Authorization: 'Bearer secret' });
    try {
      await pool.waitForWorkers(1);
      await oneStep(pool, 0);
      stallers.start();
      stallers.start();
      for (let step = 1; step <= 2; step++) {
        await pool.waitForWorkers(3);
        assert.equal(await oneStep(pool, step), config.batchSize, `step ${step} complete`);
      }
      stallers.stop();
      const honestId = rec.events.find((e) => e.event === 'worker_joined' && e.workerName === 'honest')!.workerId;
      const assigned = rec.filter((e) => e.event === 'assigned' && e.kind === 'gradients');
      const attempts = assigned.flatMap((e) => e.attempts as number[]);
      assert.ok(Math.max(...attempts) <= 2, `no unit is handed out more than twice (${attempts.join(',')})`);
      const retries = assigned.filter((e) => (e.attempts as number[]).some((a) => a > 1));
      assert.ok(retries.length > 0, 'stalled units were retried');
      assert.ok(retries.every((e) => e.workerId === honestId), 'retries go only to the worker that returns results');
      const stalled = rec.filter((e) => e.event === 'worker_left' && e.workerName === 'staller');
      assert.ok(stalled.length >= 4 && stallers.connections >= 4, `the stallers were dropped and came back (${stalled.length} drops, ${stallers.connections} connections)`);
      for (const e of stalled) {
        const m = /within (\d+) ms \(4x the fleet's recent median/.exec(String(e.reason));
        assert.ok(m, `dropped for the measured deadline: ${String(e.reason)}`);
        assert.ok(Number(m[1]) < stepTimeoutMs && Number(m[1]) >= 3_000);
      }
      assert.ok(!rec.events.some((e) => e.event === 'worker_left' && e.workerName === 'honest'), 'the honest worker stayed');
    } finally {
      stallers.stop();
      w.close();
      await run.catch(() => undefined);
      await pool.close();
    }
  });

  it('a unit is handed out at most maxAttempts times: then the step fails with ERR_TIMEOUT', async () => {
    const pool = await listen(silentLogger(), { stepTimeoutMs: 300, maxAttempts: 2 });
    const stallers = new Stallers(pool.url);
    try {
      stallers.start();
      await pool.waitForWorkers(1);
      await assert.rejects(oneStep(pool, 0), (err: unknown) => isFlockError(err, ErrorCode.TIMEOUT) && /handed out 2 times/.test(err.message) && /--max-attempts/.test(err.message));
    } finally {
      stallers.stop();
      await pool.close();
    }
  });
});
