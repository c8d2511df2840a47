// A Flock worker's life: joins a coordinator, computes what it is assigned, and rejoins by
// itself with exponential backoff when the connection drops. `run()` resolves when the
// coordinator says stop (or `close()` is called) and rejects on errors a reconnect cannot
// fix. Free of Node-only imports: the Node worker (worker.ts) and the browser tab (join/)
// both run it, each with its own socket factory.
import type { Logger } from 'pino';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock, type Clock } from '../shared/clock.js';
import type { Dataset } from '../shared/data/dataset.js';
import { definedOnly } from '../shared/defaults.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { ModelName } from '../shared/models/layers.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec, type ModelSpec } from '../shared/models/spec.js';
import { BACKOFF_DEFAULTS, backoffDelay, type BackoffOptions } from './backoff.js';
import { SampleCache } from './sample-cache.js';
import { Session, type SessionOptions } from './session.js';
import type { SocketFactory } from './socket.js';
import type { DatasetInfo } from '../shared/protocol.js';

export interface WorkerLoopOptions {
  /** ws:// or wss:// address of the coordinator. */
  readonly url: string;
  readonly name: string;
  /** What hello says the worker computes on; default the backend's name (a tab says e.g. "wasm (1 thread)"). */
  readonly backendLabel?: string;
  /** A local copy of the data and its hashes; used instead of shipped images when they match. */
  readonly localData?: { readonly data: { readonly train: Dataset; readonly validation: Dataset }; readonly hashes: DatasetInfo };
  readonly backoff: BackoffOptions;
  /** Bytes the images sent by the coordinator may take at most (checked against the welcome's counts). */
  readonly maxDataBytes: number;
  /** Give up after failing to (re)connect for this long. */
  readonly giveUpAfterMs: number;
}

export const WORKER_DEFAULTS: Pick<WorkerLoopOptions, 'backoff' | 'giveUpAfterMs' | 'maxDataBytes'> = { backoff: BACKOFF_DEFAULTS, giveUpAfterMs: 5 * 60_000, maxDataBytes: 512 * 2 ** 20 };

export interface WorkerLoopDeps {
  readonly logger: Logger;
  readonly backend: ComputeBackend;
  readonly socket: SocketFactory;
  readonly clock?: Clock;
  /** Uniform [0, 1) source for backoff jitter. */
  readonly random?: () => number;
  /** Builds the runtime of a model (default: the plain ModelRuntime; tests wrap it). */
  readonly runtime?: (backend: ComputeBackend, model: ModelSpec) => ModelRuntime;
}

export interface WorkerOutcome {
  /** Why the worker stopped: the coordinator's stop reason, or a local close. */
  readonly reason: string;
}

export class WorkerLoop {
  private readonly opts: WorkerLoopOptions;
  private readonly sessionOpts: SessionOptions;
  private readonly runtimes = new Map<ModelName, ModelRuntime>();
  private readonly samples: SampleCache;
  private session: Session | undefined;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(opts: Partial<WorkerLoopOptions> & Pick<WorkerLoopOptions, 'url' | 'name'>, private readonly deps: WorkerLoopDeps) {
    this.opts = { ...WORKER_DEFAULTS, ...definedOnly(opts), url: opts.url, name: opts.name, backoff: { ...BACKOFF_DEFAULTS, ...opts.backoff } };
    if (!Number.isSafeInteger(this.opts.maxDataBytes) || this.opts.maxDataBytes < 0) throw new FlockError(ErrorCode.BAD_OPTION, `maxDataBytes must be a non-negative integer (got ${this.opts.maxDataBytes})`);
    this.samples = new SampleCache(this.opts.maxDataBytes);
    this.sessionOpts = { url: this.opts.url, name: this.opts.name, backendName: this.opts.backendLabel ?? deps.backend.name, adapter: deps.backend.adapter, ...(this.opts.localData ? { localData: this.opts.localData } : {}) };
  }

  async run(): Promise<WorkerOutcome> {
    const clock = this.deps.clock ?? systemClock;
    const random = this.deps.random ?? Math.random;
    const log = this.deps.logger;
    let attempt = 0;
    let lostSince = clock.now();
    try {
      for (;;) {
        if (this.closed) return { reason: 'worker shutting down' };
        this.session = new Session(this.sessionOpts, { logger: log, clock, socket: this.deps.socket, runtime: (m) => this.runtime(m), samples: this.samples });
        const end = await this.session.start();
        this.session = undefined;
        if (end.kind === 'stopped') return { reason: end.reason };
        if (this.closed) return { reason: 'worker shutting down' };
        if (end.welcomed) {
          attempt = 0;
          lostSince = clock.now();
        }
        const lostFor = clock.now() - lostSince;
        if (lostFor > this.opts.giveUpAfterMs) {
          throw new FlockError(ErrorCode.TIMEOUT, `could not reach the coordinator at ${this.opts.url} for ${Math.round(lostFor / 1000)} s (last: ${end.reason}); giving up`);
        }
        const delayMs = backoffDelay(attempt++, this.opts.backoff, random);
        const what = end.welcomed ? 'connection to the coordinator lost' : 'cannot reach the coordinator';
        log.warn({ event: 'reconnecting', attempt, delayMs, reason: end.reason }, `${what} (${end.reason}); retrying in ${delayMs} ms`);
        await this.sleep(delayMs);
      }
    } finally {
      for (const r of this.runtimes.values()) r.dispose();
      this.runtimes.clear();
    }
  }

  /** Leaves gracefully: closes the connection normally; `run()` then resolves. */
  close(): void {
    this.closed = true;
    this.session?.close();
    this.wake?.();
  }

  private runtime(model: ModelName): ModelRuntime {
    let r = this.runtimes.get(model);
    if (!r) {
      r = this.deps.runtime ? this.deps.runtime(this.deps.backend, modelSpec(model)) : new ModelRuntime(this.deps.backend, modelSpec(model));
      this.runtimes.set(model, r);
    }
    return r;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
