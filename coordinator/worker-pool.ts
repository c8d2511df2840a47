// The coordinator's Executor over WebSockets: workers connect, say hello and get the run
// config; each step's micro-batches (or each evaluation's chunks) are spread round-robin
// over ready workers; results are kept by unit id and returned in id order. Workers that
// leave, miss heartbeats, stall or send anything invalid are dropped and their units go to
// the others, so no single worker can stop the run or corrupt its sum.
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Clock } from '../shared/clock.js';
import { datasetHash, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { batchNormLayers, cloneState, type ModelSpec } from '../shared/models/spec.js';
import {
  CloseCode, MessageType, NORMAL_CLOSURE, closeCodeFor, decode, encode, indicesToBytes, stateToWire,
  type DatasetInfo, type EvaluationMessage, type GradientMessage, type HelloMessage, type WireState, type WorkerMessage,
} from '../shared/protocol.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import type { Executor, Split, StepTiming, StepWork, VersionedState } from './executor.js';
import type { TrainConfig } from '../shared/training/config.js';
import { resolvePoolOptions, type PoolOptions } from './pool-options.js';
import { checkEvaluation, checkGradient } from './result-check.js';
import { rejectUpgrade, tokenMatches } from './upgrade-auth.js';
import { WorkerConn } from './worker-conn.js';
import { WorkRound, poolClosed } from './work-round.js';

export interface PoolDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly model: ModelSpec;
  readonly config: TrainConfig;
  readonly train: Dataset;
  readonly validation: Dataset;
}

type OpenRound =
  | { readonly kind: 'gradients'; readonly round: WorkRound<GradientResult>; readonly work: StepWork; readonly weightsVersion: number }
  | { readonly kind: 'evaluate'; readonly round: WorkRound<EvalResult>; readonly split: Split; readonly weightsVersion: number };

interface JoinWaiter {
  readonly n: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Bytes of a worker's largest legitimate frame (a gradient), with room for the envelope. */
export function maxPayload(model: ModelSpec): number {
  const statChannels = batchNormLayers(model).reduce((n, l) => n + l.channels, 0);
  return model.parameterCount * 4 + statChannels * 8 + 64 * 1024;
}

function violation(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

/** Consecutive unanswered pings after which a worker counts as gone. */
export const MISSED_HEARTBEATS = 3;

export class WorkerPool implements Executor {
  private readonly conns = new Map<number, WorkerConn>();
  private nextId = 1;
  private nextRequest = 1;
  private open: OpenRound | undefined;
  private weights: { version: number; wire: WireState; frame: Uint8Array } | undefined;
  private readonly waiters = new Set<JoinWaiter>();
  private readonly heartbeat: NodeJS.Timeout;
  private lastBeat: number;
  private waitLog: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  /** Set first thing in close(), so everything shutdown() triggers sees it. */
  private stopping = false;
  private readonly log: Logger;

  private constructor(
    readonly url: string,
    private readonly server: Server,
    private readonly wss: WebSocketServer,
    private readonly opts: PoolOptions,
    private readonly deps: PoolDeps,
    private readonly hashes: DatasetInfo,
  ) {
    this.log = deps.logger;
    this.lastBeat = deps.clock.now();
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs);
    server.on('upgrade', (req: IncomingMessage, socket, head) => {
      socket.on('error', (err) => this.log.debug({ event: 'upgrade_error', err: err.message }, 'socket error during upgrade'));
      if (this.stopping) return rejectUpgrade(socket, 503, 'Service Unavailable');
      if (opts.token !== undefined && !tokenMatches(opts.token, req.headers.authorization)) {
        this.log.warn({ event: 'unauthorized', remote: req.socket.remoteAddress }, `rejected a connection from ${req.socket.remoteAddress ?? '?'}: missing or wrong token`);
        return rejectUpgrade(socket, 401, 'Unauthorized');
      }
      wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
    });
  }

  /** Starts listening; resolves once the port is bound (`url` tells which). */
  static async listen(options: Partial<PoolOptions>, deps: PoolDeps): Promise<WorkerPool> {
    const opts = resolvePoolOptions(options);
    if (deps.model.name !== deps.config.model) throw new FlockError(ErrorCode.BAD_OPTION, `model spec ${deps.model.name} does not match the config's model ${deps.config.model}`);
    const handler = (_req: IncomingMessage, res: import('node:http').ServerResponse): void => {
      res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket' }).end('This is a Flock coordinator; connect with `worker --connect`.\n');
    };
    const server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) : createHttpServer(handler);
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => reject(new FlockError(ErrorCode.BAD_OPTION, `cannot listen on ${opts.host}:${opts.port} (${err.message}); pick another --host/--port`, { cause: err }));
      server.once('error', fail);
      server.listen(opts.port, opts.host, () => {
        server.off('error', fail);
        resolve();
      });
    });
    server.on('error', (err) => deps.logger.error({ event: 'server_error', err: err.message }, `server error: ${err.message}`));
    server.on('clientError', (err, socket) => socket.destroy(err));
    const wss = new WebSocketServer({ noServer: true, maxPayload: maxPayload(deps.model), perMessageDeflate: false });
    wss.on('error', (err) => deps.logger.error({ event: 'server_error', err: err.message }, `websocket server error: ${err.message}`));
    const { port } = server.address() as AddressInfo;
    const host = opts.host.includes(':') && !opts.host.startsWith('[') ? `[${opts.host}]` : opts.host;
    const url = `${opts.tls ? 'wss' : 'ws'}://${host}:${port}`;
    const pool = new WorkerPool(url, server, wss, opts, deps, { train: datasetHash(deps.train), validation: datasetHash(deps.validation) });
    deps.logger.info({ event: 'listening', url, tls: opts.tls !== undefined, auth: opts.token !== undefined }, `listening for workers on ${url}`);
    return pool;
  }

  workerCount(): number {
    return this.ready().length;
  }

  /** Resolves once at least `n` workers are ready; rejects if `signal` aborts or the pool closes. */
  waitForWorkers(n: number, signal?: AbortSignal): Promise<void> {
    if (this.stopping) return Promise.reject(poolClosed());
    if (this.workerCount() >= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        this.updateWaitLog();
        reject(new FlockError(ErrorCode.SHUTDOWN, `stopped while waiting for workers (have ${this.workerCount()}, need ${n})`));
      };
      const waiter: JoinWaiter = {
        n,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
      this.updateWaitLog();
    });
  }

  async gradients(work: StepWork, weights: VersionedState): Promise<{ results: GradientResult[]; timing: StepTiming }> {
    const start = this.deps.clock.now();
    const round = new WorkRound<GradientResult>(work.globalStep, work.microBatches);
    this.begin({ kind: 'gradients', round, work, weightsVersion: weights.version }, weights);
    try {
      const results = await round.finished;
      const now = this.deps.clock.now();
      const computeMs = round.maxComputeMs();
      const waitingMs = round.waitingMs(now);
      return { results, timing: { computeMs, waitingMs, communicationMs: Math.max(0, now - start - computeMs - waitingMs) } };
    } finally {
      this.end(round);
    }
  }

  async evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]> {
    const round = new WorkRound<EvalResult>(this.nextRequest++, chunks);
    this.begin({ kind: 'evaluate', round, split, weightsVersion: weights.version }, weights);
    try {
      return await round.finished;
    } finally {
      this.end(round);
    }
  }

  /** Sends `stop` to every worker, closes their sockets normally and stops listening. Idempotent. */
  close(reason = 'training complete'): Promise<void> {
    if (!this.closing) {
      this.stopping = true;
      this.closing = this.shutdown(reason);
    }
    return this.closing;
  }

  // ---- rounds and dispatch -------------------------------------------------------------

  private ready(): WorkerConn[] {
    return [...this.conns.values()].filter((c) => c.state === 'ready').sort((a, b) => a.id - b.id);
  }

  private begin(open: OpenRound, weights: VersionedState): void {
    if (this.stopping) throw poolClosed();
    if (this.open) throw new FlockError(ErrorCode.UNSUPPORTED, 'the worker pool runs one step or evaluation at a time');
    if (this.weights?.version !== weights.version) {
      // A copy: the trainer updates its state in place after the step.
      const wire = stateToWire(cloneState(weights.state));
      this.weights = { version: weights.version, wire, frame: encode({ type: MessageType.WEIGHTS, version: weights.version, ...wire }) };
    }
    this.open = open;
    this.dispatch();
  }

  private end(round: object): void {
    if (this.open?.round !== round) return;
    this.open = undefined;
    for (const c of this.conns.values()) {
      c.outstanding.clear();
      this.watch(c);
    }
    this.updateWaitLog();
  }

  /** Hands every unassigned unit of the open round to a ready worker, round-robin by position. */
  private dispatch(): void {
    const open = this.open;
    if (!open || this.stopping) return;
    const units = open.round.unassigned();
    const now = this.deps.clock.now();
    if (units.length === 0) {
      open.round.setWaiting(false, now);
      this.updateWaitLog();
      return;
    }
    const workers = this.ready();
    if (workers.length < this.opts.minWorkers || workers.length === 0) {
      open.round.setWaiting(true, now);
      this.updateWaitLog();
      return;
    }
    open.round.setWaiting(false, now);
    this.updateWaitLog();
    const shares = new Map<WorkerConn, MicroBatch[]>();
    units.forEach((u, k) => {
      const w = workers[k % workers.length]!;
      shares.set(w, [...(shares.get(w) ?? []), u]);
    });
    for (const [conn, share] of shares) this.sendWork(conn, open, share);
  }

  private sendWork(conn: WorkerConn, open: OpenRound, units: MicroBatch[]): void {
    const weights = this.weights!;
    if (conn.weightsVersion !== weights.version) {
      conn.send(weights.frame, (err) => this.drop(conn, `send failed: ${err.message}`));
      conn.weightsVersion = weights.version;
    }
    const wireUnits = units.map((u) => ({ id: u.id, indices: indicesToBytes(u.indices) }));
    const lists = units.map((u) => u.indices);
    const samples = conn.samples!;
    const frame = open.kind === 'gradients'
      ? encode({ type: MessageType.ASSIGN, epoch: open.work.epoch, step: open.work.globalStep, weightsVersion: weights.version, microBatches: wireUnits, samples: samples.train.take(this.deps.train, lists) })
      : encode({ type: MessageType.EVALUATE, requestId: open.round.key, weightsVersion: weights.version, split: open.split, chunks: wireUnits, samples: samples[open.split].take(this.data(open.split), lists) });
    for (const u of units) {
      open.round.assign(u.id, conn.id);
      conn.outstanding.add(u.id);
    }
    conn.log.debug({ event: 'assigned', kind: open.kind, key: open.round.key, units: units.map((u) => u.id) }, 'work assigned');
    this.watch(conn);
    conn.send(frame, (err) => this.drop(conn, `send failed: ${err.message}`));
  }

  private data(split: Split): Dataset {
    return split === 'train' ? this.deps.train : this.deps.validation;
  }

  private watch(conn: WorkerConn): void {
    conn.watchProgress(this.opts.stepTimeoutMs, () => {
      const ids = [...conn.outstanding].sort((a, b) => a - b);
      this.drop(conn, `returned no result for [${ids.join(', ')}] within ${this.opts.stepTimeoutMs} ms`, CloseCode.TIMEOUT);
    });
  }

  // ---- connections --------------------------------------------------------------------

  private accept(ws: WebSocket, req: IncomingMessage): void {
    const conn = new WorkerConn(this.nextId++, ws, req.socket.remoteAddress ?? '?', this.log);
    this.conns.set(conn.id, conn);
    // ws closes the connection itself on broken framing (1002), invalid UTF-8 (1007) or a
    // frame over maxPayload (1009); its error says why, and the close event alone would not.
    let framingError: string | undefined;
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (conn.state !== 'gone' && err.code?.startsWith('WS_ERR_')) {
        framingError = err.message;
        conn.log.warn({ event: 'worker_rejected', wsError: err.code, remote: conn.remote, err: err.message }, `closing connection ${conn.id} (${conn.name || conn.remote}): ${err.message}`);
      } else {
        conn.log.debug({ event: 'socket_error', err: err.message }, 'socket error');
      }
    });
    ws.on('pong', () => {
      conn.alive = true;
      conn.missedBeats = 0;
    });
    ws.on('message', (data: RawData, isBinary: boolean) => this.onFrame(conn, data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => {
      const why = reason.length > 0 ? reason.toString('utf8') : framingError ?? 'no reason';
      this.drop(conn, `connection closed (${code}: ${why})`);
    });
    conn.expectHello(this.opts.helloTimeoutMs, () => {
      if (conn.state !== 'greeting') return;
      const reason = `no hello within ${this.opts.helloTimeoutMs} ms`;
      conn.log.warn({ event: 'worker_rejected', code: CloseCode.TIMEOUT, remote: conn.remote, err: reason }, `closing connection ${conn.id} from ${conn.remote}: ${reason}`);
      this.drop(conn, reason, CloseCode.TIMEOUT);
    });
  }

  private onFrame(conn: WorkerConn, data: RawData, isBinary: boolean): void {
    if (conn.state === 'gone') return;
    try {
      if (!isBinary || !(data instanceof Uint8Array)) throw violation('frames must be single binary messages');
      this.handle(conn, decode(data, 'worker'));
    } catch (err) {
      const code = closeCodeFor(err);
      conn.log.warn({ event: 'worker_rejected', code, err: errorMessage(err) }, `closing worker ${conn.id}: ${errorMessage(err)}`);
      this.drop(conn, errorMessage(err), code);
    }
  }

  private handle(conn: WorkerConn, msg: WorkerMessage): void {
    if (msg.type !== MessageType.HELLO && conn.state !== 'ready') throw violation(`message type ${msg.type} before hello`);
    switch (msg.type) {
      case MessageType.HELLO:
        return this.onHello(conn, msg);
      case MessageType.GRADIENT:
        return this.onGradient(conn, msg);
      case MessageType.EVALUATION:
        return this.onEvaluation(conn, msg);
      case MessageType.FAILURE:
        conn.log.error({ event: 'worker_failed', code: msg.code, err: msg.message }, `worker ${conn.id} (${conn.name}) failed: ${msg.message}`);
        return this.drop(conn, `worker failed: ${msg.message}`, NORMAL_CLOSURE);
    }
  }

  private onHello(conn: WorkerConn, msg: HelloMessage): void {
    if (conn.state !== 'greeting') throw violation('second hello');
    const local = { train: msg.dataHashes?.train === this.hashes.train, validation: msg.dataHashes?.validation === this.hashes.validation };
    conn.greeted(msg.name, msg.backend, { train: this.deps.train, validation: this.deps.validation }, local);
    const w = this.weights;
    conn.send(encode({
      type: MessageType.WELCOME,
      workerId: conn.id,
      config: this.deps.config,
      heartbeatMs: this.opts.heartbeatMs,
      hashes: this.hashes,
      counts: { train: this.deps.train.count, validation: this.deps.validation.count },
      localData: local,
      ...(w ? { weights: { version: w.version, ...w.wire } } : {}),
    }), (err) => this.drop(conn, `send failed: ${err.message}`));
    if (w) conn.weightsVersion = w.version;
    conn.log.info({ event: 'worker_joined', workerName: msg.name, backend: msg.backend, remote: conn.remote, localData: local, workers: this.workerCount() },
      `worker ${conn.id} (${msg.name}, ${msg.backend}) joined; ${this.workerCount()} ready`);
    for (const waiter of [...this.waiters]) {
      if (this.workerCount() >= waiter.n) {
        this.waiters.delete(waiter);
        waiter.resolve();
      }
    }
    this.dispatch();
  }

  private onGradient(conn: WorkerConn, msg: GradientMessage): void {
    const open = this.open;
    if (open?.kind !== 'gradients' || open.round.key !== msg.step) throw violation(`gradient for step ${msg.step}, which is not the open step`);
    const unit = this.owned(conn, open.round, msg.microBatch, 'micro-batch');
    const result = checkGradient(msg, this.deps.model, unit.indices.length);
    this.accepted(conn, open.round, unit.id, result, msg.computeMs);
  }

  private onEvaluation(conn: WorkerConn, msg: EvaluationMessage): void {
    const open = this.open;
    if (open?.kind !== 'evaluate' || open.round.key !== msg.requestId) throw violation(`evaluation for request ${msg.requestId}, which is not open`);
    const unit = this.owned(conn, open.round, msg.chunk, 'chunk');
    this.accepted(conn, open.round, unit.id, checkEvaluation(msg, unit.indices.length), msg.computeMs);
  }

  /** The unit `id` if it is outstanding at `conn`; a violation otherwise. */
  private owned<R>(conn: WorkerConn, round: WorkRound<R>, id: number, what: string): MicroBatch {
    const unit = round.unit(id);
    if (!unit || round.ownerOf(id) !== conn.id) throw violation(`${what} ${id} is not outstanding at this worker`);
    return unit;
  }

  private accepted<R>(conn: WorkerConn, round: WorkRound<R>, id: number, result: R, computeMs: number): void {
    conn.outstanding.delete(id);
    this.watch(conn);
    round.complete(id, conn.id, result, computeMs);
  }

  /** Removes a worker, gives its outstanding units to the others, and closes its socket. */
  private drop(conn: WorkerConn, reason: string, closeCode?: number): void {
    if (conn.state === 'gone') return;
    const wasReady = conn.state === 'ready';
    this.conns.delete(conn.id);
    const reassigned = this.open ? this.open.round.release(conn.id) : [];
    conn.end(closeCode, reason);
    if (wasReady) {
      const level = this.stopping ? 'info' : 'warn';
      conn.log[level]({ event: 'worker_left', workerName: conn.name, reason, reassigned, workers: this.workerCount() },
        `worker ${conn.id} (${conn.name}) left: ${reason}` + (reassigned.length > 0 ? `; reassigning [${reassigned.join(', ')}]` : ''));
    } else {
      conn.log.debug({ event: 'connection_dropped', reason }, `connection ${conn.id} dropped before hello: ${reason}`);
    }
    this.dispatch();
  }

  private beat(): void {
    const now = this.deps.clock.now();
    // If this process's own event loop stalled, unread pongs may be queued: judge no one.
    const judge = now - this.lastBeat < 1.5 * this.opts.heartbeatMs;
    this.lastBeat = now;
    for (const conn of [...this.conns.values()]) {
      // A worker busy in one long synchronous computation (a large micro-batch on a slow
      // backend) cannot answer pings; it is dropped only after several silent intervals.
      if (judge && !conn.alive && ++conn.missedBeats >= MISSED_HEARTBEATS) {
        this.drop(conn, `missed ${MISSED_HEARTBEATS} heartbeats (no pong for ${MISSED_HEARTBEATS * this.opts.heartbeatMs} ms)`);
        continue;
      }
      conn.alive = false;
      if (conn.socket.readyState === conn.socket.OPEN) conn.socket.ping();
    }
  }

  /** Logs "waiting for workers" every waitLogMs while a round or a waiter lacks workers. */
  private updateWaitLog(): void {
    const need = this.neededWorkers();
    if (need === 0 || this.stopping) {
      clearInterval(this.waitLog);
      this.waitLog = undefined;
      return;
    }
    if (this.waitLog) return;
    const say = (): void => {
      const n = this.neededWorkers();
      if (n > 0) this.log.info({ event: 'waiting', have: this.workerCount(), need: n }, `waiting for workers (have ${this.workerCount()}, need ${n})`);
    };
    say();
    this.waitLog = setInterval(say, this.opts.waitLogMs);
  }

  /** Workers needed before anything can proceed; 0 when nothing waits on workers. */
  private neededWorkers(): number {
    const have = this.workerCount();
    let need = 0;
    for (const w of this.waiters) if (w.n > have) need = Math.max(need, w.n);
    const blocked = this.open !== undefined && this.open.round.unassigned().length > 0;
    if (blocked) need = Math.max(need, this.opts.minWorkers, 1);
    return need > have ? need : 0;
  }

  private async shutdown(reason: string): Promise<void> {
    clearInterval(this.heartbeat);
    clearInterval(this.waitLog);
    this.waitLog = undefined;
    this.open?.round.fail(poolClosed());
    for (const w of this.waiters) w.reject(poolClosed());
    this.waiters.clear();
    const stop = encode({ type: MessageType.STOP, reason });
    const closed = [...this.conns.values()].map(async (conn) => {
      const ws = conn.socket;
      if (ws.readyState === ws.CLOSED) return;
      const done = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      if (conn.state === 'ready') conn.send(stop, () => undefined);
      this.drop(conn, `coordinator stopping: ${reason}`, NORMAL_CLOSURE);
      await done;
    });
    await Promise.all(closed);
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    this.log.info({ event: 'pool_closed', reason }, 'worker pool closed');
  }
}
