// One connection to an upstream (the coordinator, or a relay acting as one), shared by the
// worker's session and the relay: hello on open, frames decoded and handed over strictly in
// arrival order, the welcome before anything else, the "upstream went silent" watchdog,
// failures of local computations reported upstream, and close codes mapped to how the
// connection ended. A protocol violation by upstream closes this connection with the
// protocol-error code and ends it as lost (the owner reconnects): a garbled frame is no
// reason to leave. Free of Node-only imports: the browser worker bundles it.
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import {
  CloseCode, HEARTBEAT_MISSES, MessageType, NORMAL_CLOSURE, closeCodeFor, closeReason, decode, encode, errorOfClose, wireToState,
  type CoordinatorMessage, type GroupPart, type WelcomeMessage, type WireState,
} from '../shared/protocol.js';
import type { BatchStats } from '../shared/models/runtime.js';
import type { ModelSpec, ModelState } from '../shared/models/spec.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import type { SocketFactory, WorkerSocket } from './socket.js';

/** How a connection ended, when it was not a fatal error (those reject). */
export type LinkEnd =
  | { readonly kind: 'stopped'; readonly reason: string }
  | { readonly kind: 'lost'; readonly reason: string; readonly welcomed: boolean };

/** What upstream asks for after its welcome. */
export type WorkMessage = Exclude<CoordinatorMessage, WelcomeMessage | { readonly type: typeof MessageType.STOP }>;

export interface LinkHandler {
  /** The hello frame, sent once the connection is open. */
  hello(): Uint8Array;
  /** The welcome (once per connection); may throw to end the connection. */
  welcome(msg: WelcomeMessage): void | Promise<void>;
  /** Work after the welcome, one message at a time in arrival order. */
  work(msg: WorkMessage): Promise<void>;
}

export interface LinkOptions {
  readonly url: string;
  /** Who is upstream, for messages: "the coordinator", "upstream ws://…". */
  readonly peer: string;
  /**
   * Whether `stop` ends the connection at once (a relay: its pool's work is abandoned with
   * the pool) or after the work queued before it (a worker: its runtime is never disposed
   * under a running computation).
   */
  readonly stopAtOnce: boolean;
}

export interface LinkDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly socket: SocketFactory;
}

/** A protocol violation by upstream: the link closes with 4000 and its owner reconnects. */
export function violation(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

/** Weights upstream sent, as a model state, once their shapes are `model`'s (parameters as binary16 in float16 runs). */
export function weightsFromUpstream(model: ModelSpec, version: number, wire: WireState): ModelState {
  const paramBytes = wire.half ? 2 : 4;
  const ok = wire.params.length === model.params.length && wire.params.every((p, i) => p.byteLength === model.params[i]!.size * paramBytes)
    && wire.buffers.length === model.buffers.length && wire.buffers.every((b, i) => b.byteLength === model.buffers[i]!.size * 4);
  if (!ok) throw new FlockError(ErrorCode.MODEL_MISMATCH, `weights version ${version} do not match model ${model.name}`);
  return wireToState(wire);
}

/** Batch-norm statistics as gradients and group sums carry them upstream. */
export function batchStatsToWire(stats: readonly BatchStats[]): GroupPart['batchStats'] {
  return stats.map((s) => ({ mean: float32ToBytes(s.mean), variance: float32ToBytes(s.variance) }));
}

export class UpstreamLink {
  private ws: WorkerSocket | undefined;
  private welcomed = false;
  private settled = false;
  private queue: Promise<void> = Promise.resolve();
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  private heartbeatMs = 0;
  private settle: { resolve: (end: LinkEnd) => void; reject: (err: Error) => void } | undefined;
  private logger: Logger;

  constructor(private readonly opts: LinkOptions, private readonly handler: LinkHandler, private readonly deps: LinkDeps) {
    this.logger = deps.logger;
  }

  /** The logger, with the id upstream gave once welcomed. */
  get log(): Logger {
    return this.logger;
  }

  /** Whether the connection has ended (work still running for it should stop and send nothing). */
  get ended(): boolean {
    return this.settled;
  }

  /** Connects and serves until the connection ends; rejects only on errors a reconnect cannot fix. */
  start(): Promise<LinkEnd> {
    return new Promise<LinkEnd>((resolve, reject) => {
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

  /** Leaves gracefully (closing the socket normally); the connection ends as stopped. */
  close(reason: string): void {
    this.end({ kind: 'stopped', reason }, NORMAL_CLOSURE);
  }

  /** Sends one frame if the connection is open (frames for a closed connection are dropped). */
  send(frame: Uint8Array): void {
    if (this.ws?.isOpen === true) this.ws.send(frame);
  }

  /**
   * Runs a local computation; when it fails, upstream is told (a `failure` naming `what`)
   * and the error, now BACKEND_UNAVAILABLE, ends the connection when it reaches the queue.
   */
  async compute<T>(f: () => Promise<T>, what: string): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (this.settled) throw err;
      const e = new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `${what}: ${errorMessage(err)}`, { cause: err });
      this.send(encode({ type: MessageType.FAILURE, code: e.code, message: e.message }));
      throw e;
    }
  }

  private onOpen(): void {
    this.deps.logger.info({ event: 'connected', url: this.opts.url }, `connected to ${this.opts.url}`);
    this.send(this.handler.hello());
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
    if (msg.type === MessageType.STOP && this.opts.stopAtOnce) return this.stop(msg.reason);
    this.queue = this.queue.then(() => this.handle(msg)).catch((err: unknown) => this.failOrReconnect(err));
  }

  private async handle(msg: CoordinatorMessage): Promise<void> {
    if (this.settled) return;
    switch (msg.type) {
      case MessageType.STOP:
        return this.stop(msg.reason);
      case MessageType.WELCOME:
        if (this.welcomed) throw violation('second welcome');
        this.welcomed = true;
        this.logger = this.deps.logger.child({ workerId: msg.workerId });
        await this.handler.welcome(msg);
        this.heartbeatMs = msg.heartbeatMs;
        return this.feedWatchdog();
      case MessageType.ASSIGN:
      case MessageType.EVALUATE:
        if (!this.welcomed) throw violation(`message type ${msg.type} before welcome`);
        return this.handler.work(msg);
    }
  }

  private stop(reason: string): void {
    this.logger.info({ event: 'stop', reason }, `${this.opts.peer} says stop: ${reason}`);
    this.end({ kind: 'stopped', reason }, NORMAL_CLOSURE);
  }

  /** A protocol violation by upstream closes this connection (4000) and ends it as lost; other errors are fatal. */
  private failOrReconnect(err: unknown): void {
    if (this.settled) return;
    if (!(err instanceof FlockError) || err.code !== ErrorCode.PROTOCOL) return this.fail(err);
    this.logger.error({ event: 'protocol_error', err: err.message }, `${this.opts.peer} broke the protocol (${err.message}); closing this connection and reconnecting`);
    this.end({ kind: 'lost', reason: err.message, welcomed: this.welcomed }, CloseCode.PROTOCOL);
  }

  /** Restarts the "upstream went silent" timer (it pings every heartbeatMs); only where pings are seen. */
  private feedWatchdog(): void {
    if (this.heartbeatMs <= 0 || this.settled || this.ws?.seesPings !== true) return;
    clearTimeout(this.watchdog);
    const limit = HEARTBEAT_MISSES * this.heartbeatMs;
    const armed = this.deps.clock.now();
    this.watchdog = setTimeout(() => {
      // Fired far too late: our own loop was blocked (a long computation) and pings may
      // be waiting unread, so give upstream another period instead of leaving.
      if (this.deps.clock.now() - armed > limit + this.heartbeatMs) return this.feedWatchdog();
      this.ws?.terminate();
      this.lose(`no heartbeat from ${this.opts.peer} for ${limit} ms`);
    }, limit);
  }

  private onClose(code: number, reason: string): void {
    if (this.settled) return;
    const why = reason === '' ? `code ${code}` : `${code}: ${reason}`;
    if (code === NORMAL_CLOSURE) return this.end({ kind: 'stopped', reason: `${this.opts.peer} closed the connection (${why})` });
    const err = errorOfClose(code, reason);
    if (!err || code === CloseCode.TIMEOUT) return this.lose(`connection closed (${why})`);
    this.fail(new FlockError(err.code, `${this.opts.peer} closed the connection: ${err.message}`));
  }

  private lose(reason: string): void {
    this.end({ kind: 'lost', reason, welcomed: this.welcomed }, undefined);
  }

  /** Ends the connection with an error; tells upstream why when the socket is still open. */
  private fail(err: unknown): void {
    if (this.settled) return;
    const e = err instanceof Error ? err : new Error(String(err));
    this.finish(closeCodeFor(e), errorMessage(e));
    this.settle?.reject(e);
  }

  private end(end: LinkEnd, closeCode?: number): void {
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
