// The coordinator's view of one worker connection: identity, what it holds (weights
// version, samples), its outstanding work units and its timers.
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { Dataset } from '../shared/data/cifar.js';
import { CLOSE_GRACE_MS, closeReason } from '../shared/protocol.js';
import { SentSamples } from './sent-samples.js';

export const notReading = (queued: number, max: number): string => `worker is not reading: ${queued} bytes queued (over ${max})`;

export type ConnState = 'greeting' | 'ready' | 'gone';

export class WorkerConn {
  state: ConnState = 'greeting';
  name = '';
  backend = '';
  /** The peer is a relay (hello.relay): it takes whole reduce groups. */
  relay = false;
  /** The device its backend computes on, as the worker said in hello. */
  adapter = '';
  log: Logger;
  /** Weights version the worker holds; -1 = none. */
  weightsVersion = -1;
  samples: { train: SentSamples; validation: SentSamples } | undefined;
  /** Unit ids of the open round this worker still owes. */
  readonly outstanding = new Set<number>();
  /** Results accepted from this connection; units already tried elsewhere go to connections with some. */
  results = 0;
  /** When this connection last got work or returned a result (for the fleet's pace). */
  lastProgress = 0;
  /** Training micro-batches returned, the compute time the worker reported for them, and the
   * time each took here from assignment (or the previous result) to arrival: the rest of that
   * is communication and queueing, shown per worker on the dashboard. */
  readonly trainTiming = { results: 0, computeMs: 0, elapsedMs: 0 };
  /** A pong arrived since the last ping. */
  alive = true;
  /** Consecutive heartbeats without a pong. */
  missedBeats = 0;
  private helloTimer: NodeJS.Timeout | undefined;
  private lastBacklog: number | undefined;
  private progressTimer: NodeJS.Timeout | undefined;
  /** The no-progress timer's duration and what it calls (the latest watchProgress's). */
  private progressMs = 0;
  private onStall: (() => void) | undefined;

  /** @param transport the underlying TCP (or TLS) socket, as the server saw it connect */
  constructor(
    readonly id: number, readonly socket: WebSocket, readonly transport: Duplex, readonly remote: string, logger: Logger,
    /** Bytes that may wait in this process for the socket; more means the worker is not reading. */
    private readonly maxBufferedBytes: number,
  ) {
    this.log = logger.child({ workerId: id });
  }

  greeted(name: string, backend: string, adapter: string, data: { train: Dataset; validation: Dataset }, local: { train: boolean; validation: boolean }, held?: { train?: Uint8Array; validation?: Uint8Array }): void {
    this.name = name;
    this.backend = backend;
    this.adapter = adapter;
    this.state = 'ready';
    this.samples = { train: new SentSamples(data.train.count, local.train, held?.train), validation: new SentSamples(data.validation.count, local.validation, held?.validation) };
    clearTimeout(this.helloTimer);
  }

  expectHello(ms: number, onTimeout: () => void): void {
    this.helloTimer = setTimeout(onTimeout, ms);
  }

  /**
   * (Re)starts the no-progress timer while the worker owes work; stops it when it owes none.
   * Called on every assignment and result: a running timer of the same duration is pushed
   * back (refresh) rather than replaced.
   */
  watchProgress(ms: number, onTimeout: () => void): void {
    this.onStall = onTimeout;
    if (this.outstanding.size === 0) {
      clearTimeout(this.progressTimer);
      this.progressTimer = undefined;
      return;
    }
    if (this.progressTimer && this.progressMs === ms) {
      this.progressTimer.refresh();
      return;
    }
    clearTimeout(this.progressTimer);
    this.progressMs = ms;
    this.progressTimer = setTimeout(() => {
      this.progressTimer = undefined;
      this.onStall?.();
    }, ms);
  }

  /** Bytes queued for the socket beyond what it took, when over the limit (the worker is not reading). */
  backlog(): number | undefined {
    const queued = this.socket.bufferedAmount;
    return queued > this.maxBufferedBytes ? queued : undefined;
  }

  /**
   * Called once per heartbeat: the backlog when it is over the limit and has not shrunk since
   * the previous call (a large frame that is being read drains; one that is not read stays).
   */
  stuckBacklog(): number | undefined {
    const queued = this.backlog();
    const previous = this.lastBacklog;
    this.lastBacklog = queued;
    return queued !== undefined && previous !== undefined && queued >= previous ? queued : undefined;
  }

  /**
   * Queues a frame, unless too much already waits for this worker: then nothing is queued and
   * `onError` is called (on the next turn, like a failed write, so callers finish first).
   * A frame given in parts goes as fragments of one message (the parts are not copied).
   */
  send(frame: Uint8Array | readonly Uint8Array[], onError: (err: Error) => void): void {
    if (this.socket.readyState !== this.socket.OPEN) return;
    const backlog = this.backlog();
    if (backlog !== undefined) {
      setImmediate(() => onError(new Error(notReading(backlog, this.maxBufferedBytes))));
      return;
    }
    const parts = frame instanceof Uint8Array ? [frame] : frame;
    // Corked: the fragments of a message leave in one write (one system call) instead of one each.
    this.transport.cork();
    try {
      parts.forEach((part, i) => {
        const fin = i === parts.length - 1;
        this.socket.send(part, { binary: true, fin }, fin ? (err) => {
          if (err) onError(err);
        } : undefined);
      });
    } finally {
      this.transport.uncork();
    }
  }

  /** Stops the timers and closes the socket (with a close frame when `code` is given). */
  end(code: number | undefined, reason: string): void {
    this.state = 'gone';
    clearTimeout(this.helloTimer);
    clearTimeout(this.progressTimer);
    this.progressTimer = undefined;
    this.outstanding.clear();
    const s = this.socket;
    if (s.readyState === s.CLOSED) return;
    if (code === undefined || s.readyState !== s.OPEN) {
      s.terminate();
      return;
    }
    s.close(code, closeReason(reason));
    // A peer that never answers the close frame is cut off rather than waited for.
    setTimeout(() => s.terminate(), CLOSE_GRACE_MS).unref();
  }
}
