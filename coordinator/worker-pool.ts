// The coordinator's Executor over WebSockets: workers connect, say hello and get the run
// config; each step's micro-batches (or each evaluation's chunks) are spread over ready
// workers; results are kept by unit id and returned in id order. Workers that leave, miss
// heartbeats, stall or send anything invalid are dropped and their units go to the others.
// This file wires the parts: listener (pool-listener.ts), admission (pool-admission.ts),
// connections (pool-connections.ts), heartbeats (pool-heartbeat.ts), scheduling
// (pool-scheduler.ts) and waiting for workers (pool-waiters.ts); it greets workers and
// shuts everything down. With `verify` (issue 12) results are checked before use
// (verifier.ts) and workers proven wrong are quarantined (quarantine.ts).
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { datasetHash, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { definedOnly } from '../shared/defaults.js';
import type { EvalResult } from '../shared/models/runtime.js';
import type { ModelSpec } from '../shared/models/spec.js';
import { CloseCode, MessageType, NORMAL_CLOSURE, bitsToFlags, encode, type DatasetInfo, type HelloMessage, type WorkerMessage } from '../shared/protocol.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import type { TrainConfig } from '../shared/training/config.js';
import type { Executor, GradientsOutcome, Split, StepWork, VersionedState } from './executor.js';
import type { LiveWorker } from './dashboard/run-monitor.js';
import { Admission } from './pool-admission.js';
import { ConnectionRegistry, violation } from './pool-connections.js';
import { Heartbeat } from './pool-heartbeat.js';
import { listen, type Listener, type RequestHandler } from './pool-listener.js';
import { resolvePoolOptions, type PoolOptions } from './pool-options.js';
import { Scheduler } from './pool-scheduler.js';
import { JoinWaiters } from './pool-waiters.js';
import type { WorkerConn } from './worker-conn.js';
import { poolClosed } from './work-round.js';
import type { Arbiter } from './arbiter.js';
import type { Evidence, Quarantine } from './quarantine.js';
import { NO_COUNTS, VERIFY_DEFAULTS, Verifier, type VerificationCounters, type VerifyOptions } from './verifier.js';

export { maxPayload } from './pool-listener.js';

export interface PoolDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly model: ModelSpec;
  readonly config: TrainConfig;
  readonly train: Dataset;
  readonly validation: Dataset;
  /** The data set's identity, when `train`/`validation` are a relay's partial copy of it (default: their hashes). */
  readonly hashes?: DatasetInfo;
  /** Answers plain HTTP requests on the pool's port (the dashboard); default: 426. */
  readonly http?: RequestHandler;
  /** Verify results (audits, guards, quarantine); without it results are taken on trust. */
  readonly verify?: Partial<VerifyOptions> & { readonly arbiter: Arbiter; readonly quarantine: Quarantine };
}

export class WorkerPool implements Executor {
  private readonly conns: ConnectionRegistry;
  private readonly scheduler: Scheduler;
  private readonly waiters: JoinWaiters;
  private readonly heartbeat: Heartbeat;
  private listener!: Listener;
  private admission!: Admission;
  private closing: Promise<void> | undefined;
  /** Set first thing in close(), so everything shutdown() triggers sees it. */
  private stopping = false;
  private readonly log: Logger;
  private readonly hashes: DatasetInfo;
  private readonly verifier: Verifier | undefined;

  private constructor(private readonly opts: PoolOptions, private readonly deps: PoolDeps) {
    this.log = deps.logger;
    const v = deps.verify;
    this.verifier = v ? new Verifier({ ...VERIFY_DEFAULTS, ...definedOnly({ auditRate: v.auditRate, auditSeed: v.auditSeed }) }, deps.logger) : undefined;
    this.hashes = deps.hashes ?? { train: datasetHash(deps.train), validation: datasetHash(deps.validation) };
    const stopping = (): boolean => this.stopping;
    this.conns = new ConnectionRegistry(this.log, opts, {
      message: (conn, msg) => this.handle(conn, msg),
      release: (conn) => this.scheduler.release(conn),
      dropped: () => this.scheduler.dispatch(),
      stopping,
    });
    this.waiters = new JoinWaiters(this.log, opts.waitLogMs, opts.minWorkers, () => this.conns.readyCount(), () => this.scheduler.blocked());
    this.scheduler = new Scheduler(opts, {
      clock: deps.clock, model: deps.model, wirePrecision: deps.config.wirePrecision, train: deps.train, validation: deps.validation,
      ready: () => this.conns.ready(), all: () => this.conns.all(),
      drop: (conn, reason, code) => this.conns.drop(conn, reason, code),
      stopping, waitingChanged: () => this.waiters.update(),
      ...(v && this.verifier ? { verify: { verifier: this.verifier, arbiter: v.arbiter, convict: (e: Evidence) => this.convict(e) } } : {}),
    });
    this.heartbeat = new Heartbeat(opts.heartbeatMs, deps.clock, () => this.conns.all(), (conn, reason) => this.conns.drop(conn, reason), opts.maxBufferedBytes);
  }

  get url(): string {
    return this.listener.url;
  }

  /** Starts listening; resolves once the port is bound (`url` tells which). */
  static async listen(options: Partial<PoolOptions>, deps: PoolDeps): Promise<WorkerPool> {
    const opts = resolvePoolOptions(options);
    if (deps.model.name !== deps.config.model) throw new FlockError(ErrorCode.BAD_OPTION, `model spec ${deps.model.name} does not match the config's model ${deps.config.model}`);
    const pool = new WorkerPool(opts, deps);
    try {
      pool.listener = await listen(opts, deps.model, deps.train.count + deps.validation.count, Math.ceil(deps.config.batchSize / deps.config.microBatch), deps.logger, (server, wss) => {
        pool.admission = new Admission(opts, wss, deps.logger, () => pool.stopping, (ws, req) => pool.conns.accept(ws, req));
        pool.admission.attach(server);
        return pool.admission.onUpgrade;
      }, deps.http);
    } catch (err) {
      pool.heartbeat.stop();
      throw err;
    }
    deps.logger.info({ event: 'listening', url: pool.url, tls: opts.tls !== undefined, auth: opts.token !== undefined }, `listening for workers on ${pool.url}`);
    return pool;
  }

  /** A plain HTTP request on `socket` passed the token check: it no longer holds a --max-pending slot. */
  httpAuthorized(socket: Duplex): void {
    this.admission.greeted(socket);
  }

  workerCount(): number {
    return this.conns.readyCount();
  }

  /** The ready workers' counters, for the dashboard. */
  workerStats(): LiveWorker[] {
    const now = this.deps.clock.now();
    return this.conns.ready().map((c) => ({
      id: c.id, name: c.name, backend: c.backend, adapter: c.adapter, results: c.results, idleMs: Math.max(0, now - c.lastProgress), train: { ...c.trainTiming },
    }));
  }

  /** Resolves once at least `n` workers are ready; rejects if `signal` aborts or the pool closes. */
  waitForWorkers(n: number, signal?: AbortSignal): Promise<void> {
    if (this.stopping) return Promise.reject(poolClosed());
    return this.waiters.wait(n, signal);
  }

  gradients(work: StepWork, weights: VersionedState): Promise<GradientsOutcome> {
    return this.scheduler.gradients(work, weights);
  }

  evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]> {
    return this.scheduler.evaluate(split, chunks, weights);
  }

  /** Workers quarantined so far (the trainer keeps them in checkpoints). */
  quarantined(): readonly Evidence[] {
    return this.deps.verify?.quarantine.list() ?? [];
  }

  /** Whether results are verified, so that a rollback may be asked for. */
  rollsBack(): boolean {
    return this.verifier !== undefined;
  }

  /** A rollback the trainer must do (a worker was quarantined); cleared by reading. */
  takeRollback(): { step: number; reason: string } | undefined {
    return this.verifier?.takeRollback();
  }

  /** The trainer went back to `step`: the same version numbers now mean other weights. */
  rewound(step: number): void {
    this.verifier?.rewound(step);
    this.scheduler.forgetWeights();
  }

  verificationCounters(): VerificationCounters {
    return this.verifier?.counters() ?? NO_COUNTS;
  }

  /** Quarantines a worker proven wrong: logs the evidence and closes its connections (4009). */
  private convict(e: Evidence): boolean {
    const quarantine = this.deps.verify!.quarantine;
    const first = !quarantine.has(e.workerName);
    if (first) quarantine.add(e);
    if (first) this.log.error({ event: 'quarantined', ...e },
      `worker ${e.workerId} (${e.workerName}, ${e.backend}) quarantined: ${e.why} (its result ${e.claimed.toExponential(4)}, settled ${e.settled.toExponential(4)}, by ${e.arbiter}); ` +
      'it is refused for the rest of the run (lift with POST /quarantine/lift)');
    for (const conn of this.conns.all()) {
      if (conn.id === e.workerId || (conn.state === 'ready' && conn.name === e.workerName)) {
        this.conns.drop(conn, `quarantined: ${e.why} [${ErrorCode.QUARANTINED}]`, CloseCode.QUARANTINED);
      }
    }
    return first;
  }

  /** Sends `stop` to every worker, closes their sockets normally and stops listening. Idempotent. */
  close(reason = 'training complete'): Promise<void> {
    if (!this.closing) {
      this.stopping = true;
      this.closing = this.shutdown(reason);
    }
    return this.closing;
  }

  private handle(conn: WorkerConn, msg: WorkerMessage): void {
    switch (msg.type) {
      case MessageType.HELLO:
        return this.onHello(conn, msg);
      case MessageType.GRADIENT:
        return this.scheduler.onGradient(conn, msg);
      case MessageType.GROUP_SUM:
        return this.scheduler.onGroupSum(conn, msg);
      case MessageType.EVALUATION:
        return this.scheduler.onEvaluation(conn, msg);
      case MessageType.FAILURE:
        conn.log.error({ event: 'worker_failed', code: msg.code, err: msg.message }, `worker ${conn.id} (${conn.name}) failed: ${msg.message}`);
        return this.conns.drop(conn, `worker failed: ${msg.message}`, NORMAL_CLOSURE);
    }
  }

  private onHello(conn: WorkerConn, msg: HelloMessage): void {
    if (conn.state !== 'greeting') throw violation('second hello');
    if (this.deps.verify?.quarantine.has(msg.name)) {
      throw new FlockError(ErrorCode.QUARANTINED, `worker name ${msg.name} is quarantined for returning wrong results; the operator can lift it with POST /quarantine/lift`);
    }
    const local = { train: msg.dataHashes?.train === this.hashes.train, validation: msg.dataHashes?.validation === this.hashes.validation };
    // Images a reconnecting worker kept; a bitset for another data set is ignored.
    const sameData = msg.held?.hashes.train === this.hashes.train && msg.held.hashes.validation === this.hashes.validation;
    const kept = (split: 'train' | 'validation'): Uint8Array | undefined =>
      msg.held && sameData && !local[split] ? bitsToFlags(msg.held[split], this.deps[split].count) : undefined;
    const held = { train: kept('train'), validation: kept('validation') };
    this.admission.greeted(conn.transport);
    conn.greeted(msg.name, msg.backend, msg.adapter, { train: this.deps.train, validation: this.deps.validation }, local, held);
    conn.relay = msg.relay === true;
    const w = this.scheduler.currentWeights();
    conn.send(encode({
      type: MessageType.WELCOME,
      workerId: conn.id,
      config: this.deps.config,
      heartbeatMs: this.opts.heartbeatMs,
      hashes: this.hashes,
      counts: { train: this.deps.train.count, validation: this.deps.validation.count },
      localData: local,
      ...(w ? { weights: { version: w.version, ...w.wire } } : {}),
    }), (err) => this.conns.drop(conn, `send failed: ${err.message}`));
    if (w) conn.weightsVersion = w.version;
    const imagesHeld = { train: conn.samples!.train.count(), validation: conn.samples!.validation.count() };
    conn.log.info({ event: 'worker_joined', workerName: msg.name, backend: msg.backend, adapter: msg.adapter, relay: conn.relay, remote: conn.remote, localData: local, imagesHeld, workers: this.workerCount() },
      `worker ${conn.id} (${msg.name}, ${msg.backend}) joined; ${this.workerCount()} ready`);
    this.waiters.joined();
    this.scheduler.dispatch();
  }

  private async shutdown(reason: string): Promise<void> {
    this.heartbeat.stop();
    this.scheduler.fail(poolClosed());
    this.waiters.close(poolClosed());
    const stop = encode({ type: MessageType.STOP, reason });
    const closed = this.conns.all().map(async (conn) => {
      const ws = conn.socket;
      if (ws.readyState === ws.CLOSED) return;
      const done = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      if (conn.state === 'ready') conn.send(stop, () => undefined);
      this.conns.drop(conn, `coordinator stopping: ${reason}`, NORMAL_CLOSURE);
      await done;
    });
    await Promise.all(closed);
    await this.listener.close();
    this.admission.close();
    this.log.info({ event: 'pool_closed', reason }, 'worker pool closed');
  }
}
