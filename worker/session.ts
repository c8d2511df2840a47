// One connection of a worker to the coordinator: hello, welcome, then weights, assignments
// and evaluations until `stop` or until the connection ends. Messages are handled strictly
// in arrival order; the event loop is yielded between units so pings get their pongs.
// Free of Node-only imports: the socket comes from a factory, and the browser worker (join/)
// bundles this file unchanged.
import type { Logger } from 'pino';
import type { TrainConfig } from '../shared/training/config.js';
import type { Clock } from '../shared/clock.js';
import type { Dataset } from '../shared/data/dataset.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import type { ModelName } from '../shared/models/layers.js';
import type { ModelRuntime } from '../shared/models/runtime.js';
import {
  CloseCode, HEARTBEAT_MISSES, MessageType, NORMAL_CLOSURE, bytesToIndices, closeCodeFor, closeReason, decode, encode, errorOfClose, halfTensors, wireToState,
  type AssignMessage, type CoordinatorMessage, type DatasetInfo, type EvaluateMessage, type WelcomeMessage, type WireState,
} from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import { dropoutSeed } from '../shared/training/schedule.js';
import type { SampleCache, SplitStores } from './sample-cache.js';
import { yieldToEventLoop, type SocketFactory, type WorkerSocket } from './socket.js';

/** How a session ended, when it was not a fatal error (those reject). */
export type SessionEnd =
  | { readonly kind: 'stopped'; readonly reason: string }
  | { readonly kind: 'lost'; readonly reason: string; readonly welcomed: boolean };

export interface SessionOptions {
  readonly url: string;
  readonly name: string;
  readonly backendName: string;
  /** The device the backend computes on (sent in hello for the dashboard). */
  readonly adapter: string;
  readonly localData?: { readonly data: { readonly train: Dataset; readonly validation: Dataset }; readonly hashes: DatasetInfo };
}

export interface SessionDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Opens the WebSocket (ws in Node, the browser's own in a tab). */
  readonly socket: SocketFactory;
  /** The runtime for a model (the worker keeps one per model across reconnects). */
  readonly runtime: (model: ModelName) => ModelRuntime;
  /** The images this worker holds; the worker keeps it across reconnects. */
  readonly samples: SampleCache;
}

interface Run {
  readonly config: TrainConfig;
  readonly runtime: ModelRuntime;
  readonly stores: SplitStores;
  weightsVersion: number;
}

function violation(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

export class Session {
  private ws: WorkerSocket | undefined;
  private run: Run | undefined;
  private settled = false;
  private queue: Promise<void> = Promise.resolve();
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  private heartbeatMs = 0;
  private settle: { resolve: (end: SessionEnd) => void; reject: (err: Error) => void } | undefined;
  private log: Logger;

  constructor(private readonly opts: SessionOptions, private readonly deps: SessionDeps) {
    this.log = deps.logger;
  }

  /** Connects and serves until the session ends; rejects only on errors a retry cannot fix. */
  start(): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve, reject) => {
      this.settle = { resolve, reject };
      this.ws = this.deps.socket(this.opts.url, {
        open: () => this.onOpen(),
        frame: (data) => this.onFrame(data),
        ping: () => this.feedWatchdog(),
        closed: (code, reason) => this.onClose(code, reason),
        lost: (reason) => this.lose(reason),
        failed: (err) => this.fail(err),
      });
    });
  }

  /** Leaves gracefully (closing the socket normally); the session ends as stopped. */
  close(): void {
    this.end({ kind: 'stopped', reason: 'worker shutting down' }, NORMAL_CLOSURE);
  }

  private onOpen(): void {
    this.log.info({ event: 'connected', url: this.opts.url }, `connected to ${this.opts.url}`);
    const local = this.opts.localData;
    const held = this.deps.samples.held();
    this.send(encode({ type: MessageType.HELLO, name: this.opts.name, backend: this.opts.backendName, adapter: this.opts.adapter, ...(local ? { dataHashes: local.hashes } : {}), ...(held ? { held } : {}) }));
  }

  private onFrame(data: Uint8Array | undefined): void {
    if (this.settled) return;
    let msg: CoordinatorMessage;
    try {
      if (data === undefined) throw violation('frames must be single binary messages');
      msg = decode(data, 'coordinator');
    } catch (err) {
      return this.failOrReconnect(err);
    }
    this.queue = this.queue.then(() => this.handle(msg)).catch((err: unknown) => this.failOrReconnect(err));
  }

  /**
   * A protocol violation by the coordinator never ends the worker: it closes this connection
   * with the protocol-error code, says why in its log and reconnects (a coordinator bug or a
   * garbled frame is not a reason to leave the fleet). Other errors end the session.
   */
  private failOrReconnect(err: unknown): void {
    if (this.settled) return;
    if (!(err instanceof FlockError) || err.code !== ErrorCode.PROTOCOL) return this.fail(err);
    this.log.error({ event: 'protocol_error', err: err.message }, `the coordinator broke the protocol (${err.message}); closing this connection and reconnecting`);
    this.end({ kind: 'lost', reason: err.message, welcomed: this.run !== undefined }, CloseCode.PROTOCOL);
  }

  private async handle(msg: CoordinatorMessage): Promise<void> {
    if (this.settled) return;
    if (msg.type !== MessageType.WELCOME && msg.type !== MessageType.STOP && !this.run) throw violation(`message type ${msg.type} before welcome`);
    switch (msg.type) {
      case MessageType.WELCOME:
        return this.onWelcome(msg);
      case MessageType.ASSIGN:
        return this.onAssign(msg);
      case MessageType.EVALUATE:
        return this.onEvaluate(msg);
      case MessageType.STOP:
        this.log.info({ event: 'stop', reason: msg.reason }, `coordinator says stop: ${msg.reason}`);
        return this.end({ kind: 'stopped', reason: msg.reason }, NORMAL_CLOSURE);
    }
  }

  private onWelcome(msg: WelcomeMessage): void {
    if (this.run) throw violation('second welcome');
    const stores = this.deps.samples.stores(msg, this.opts.localData?.data);
    this.run = { config: msg.config, runtime: this.deps.runtime(msg.config.model), stores, weightsVersion: -1 };
    this.log = this.deps.logger.child({ workerId: msg.workerId });
    if (msg.weights) this.setWeights(msg.weights.version, msg.weights);
    this.heartbeatMs = msg.heartbeatMs;
    this.feedWatchdog();
    this.log.info({ event: 'welcomed', model: msg.config.model, localData: msg.localData }, `joined as worker ${msg.workerId} (model ${msg.config.model})`);
  }

  /** Restarts the "coordinator went silent" timer (it pings every heartbeatMs); only where pings are seen. */
  private feedWatchdog(): void {
    if (this.heartbeatMs <= 0 || this.settled || this.ws?.seesPings !== true) return;
    clearTimeout(this.watchdog);
    const limit = HEARTBEAT_MISSES * this.heartbeatMs;
    const armed = this.deps.clock.now();
    this.watchdog = setTimeout(() => {
      // Fired far too late: our own loop was blocked (a long computation) and pings may
      // be waiting unread, so give the coordinator another period instead of leaving.
      if (this.deps.clock.now() - armed > limit + this.heartbeatMs) return this.feedWatchdog();
      this.ws?.terminate();
      this.lose(`no heartbeat from the coordinator for ${limit} ms`);
    }, limit);
  }

  private setWeights(version: number, wire: WireState): void {
    const run = this.run!;
    const model = run.runtime.model;
    const paramBytes = wire.half ? 2 : 4;
    const ok = wire.params.length === model.params.length && wire.params.every((p, i) => p.byteLength === model.params[i]!.size * paramBytes)
      && wire.buffers.length === model.buffers.length && wire.buffers.every((b, i) => b.byteLength === model.buffers[i]!.size * 4);
    if (!ok) throw new FlockError(ErrorCode.MODEL_MISMATCH, `weights version ${version} do not match model ${model.name}`);
    run.runtime.setState(wireToState(wire));
    run.weightsVersion = version;
  }

  private checkVersion(version: number): Run {
    const run = this.run!;
    if (version !== run.weightsVersion) throw violation(`work at weights version ${version}, but this worker holds version ${run.weightsVersion}`);
    return run;
  }

  private async onAssign(msg: AssignMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights.version, msg.weights);
    const run = this.checkVersion(msg.weightsVersion);
    run.stores.train.add(msg.samples);
    for (const mb of msg.microBatches) {
      if (this.settled) return;
      const batch = run.stores.train.batch(bytesToIndices(mb.indices));
      const start = this.deps.clock.now();
      const r = await this.compute(() => run.runtime.gradients(batch, dropoutSeed(run.config.seed, msg.step, mb.id)));
      // --wire-precision float16: half the bytes, unless a value is beyond binary16's range.
      const half = run.config.wirePrecision === 'float16' ? halfTensors(r.grads) : undefined;
      this.send(encode({
        type: MessageType.GRADIENT, step: msg.step, microBatch: mb.id,
        grads: half ?? r.grads.map(float32ToBytes), ...(half ? { half: true } : {}), lossSum: r.lossSum, correct: r.correct, count: r.count,
        batchStats: r.batchStats.map((s) => ({ mean: float32ToBytes(s.mean), variance: float32ToBytes(s.variance) })),
        computeMs: this.deps.clock.now() - start,
      }));
      this.log.debug({ event: 'gradient', step: msg.step, microBatch: mb.id, count: r.count }, 'gradient sent');
      await yieldToEventLoop();
    }
  }

  private async onEvaluate(msg: EvaluateMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights.version, msg.weights);
    const run = this.checkVersion(msg.weightsVersion);
    const store = run.stores[msg.split];
    store.add(msg.samples);
    for (const chunk of msg.chunks) {
      if (this.settled) return;
      const batch = store.batch(bytesToIndices(chunk.indices));
      const start = this.deps.clock.now();
      const r = await this.compute(() => run.runtime.evaluate(batch));
      this.send(encode({ type: MessageType.EVALUATION, requestId: msg.requestId, chunk: chunk.id, lossSum: r.lossSum, correct: r.correct, count: r.count, computeMs: this.deps.clock.now() - start }));
      await yieldToEventLoop();
    }
  }

  /** Runs a computation; a backend failure is reported to the coordinator, then ends the worker. */
  private async compute<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      const e = new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `computation failed on the ${this.opts.backendName} backend: ${errorMessage(err)}`, { cause: err });
      this.send(encode({ type: MessageType.FAILURE, code: e.code, message: e.message }));
      throw e;
    }
  }

  private send(frame: Uint8Array): void {
    if (this.ws?.isOpen === true) this.ws.send(frame);
  }

  private onClose(code: number, reason: string): void {
    if (this.settled) return;
    const why = reason === '' ? `code ${code}` : `${code}: ${reason}`;
    if (code === NORMAL_CLOSURE) return this.end({ kind: 'stopped', reason: `coordinator closed the connection (${why})` });
    const err = errorOfClose(code, reason);
    if (!err || code === CloseCode.TIMEOUT) return this.lose(`connection closed (${why})`);
    this.fail(new FlockError(err.code, `the coordinator closed the connection: ${err.message}`));
  }

  private lose(reason: string): void {
    this.end({ kind: 'lost', reason, welcomed: this.run !== undefined }, undefined);
  }

  /** Ends the session with an error; tells the coordinator why when the socket is still open. */
  private fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.settled) return;
    this.finish(closeCodeFor(e), errorMessage(e));
    this.settle?.reject(e);
  }

  private end(end: SessionEnd, closeCode?: number): void {
    if (this.settled) return;
    this.finish(closeCode, end.reason);
    this.settle?.resolve(end);
  }

  private finish(closeCode: number | undefined, reason: string): void {
    this.settled = true;
    clearTimeout(this.watchdog);
    const ws = this.ws;
    if (!ws || ws.isClosed) return;
    if (closeCode !== undefined && ws.isOpen) {
      ws.close(closeCode, closeReason(reason));
    } else {
      ws.terminate();
    }
  }
}
