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
import { BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js';
import { REJOIN_DEFAULTS, Rejoin } from './rejoin.js';
import { DEFAULT_MAX_DATA_BYTES, SampleCache } from './sample-cache.js';
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

export const WORKER_DEFAULTS: Pick<WorkerLoopOptions, 'backoff' | 'giveUpAfterMs' | 'maxDataBytes'> = { ...REJOIN_DEFAULTS, maxDataBytes: DEFAULT_MAX_DATA_BYTES };

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
  private readonly rejoin: Rejoin;
  private readonly clock: Clock;

  constructor(opts: Partial<WorkerLoopOptions> & Pick<WorkerLoopOptions, 'url' | 'name'>, private readonly deps: WorkerLoopDeps) {
    this.opts = { ...WORKER_DEFAULTS, ...definedOnly(opts), url: opts.url, name: opts.name, backoff: { ...BACKOFF_DEFAULTS, ...opts.backoff } };
    if (!Number.isSafeInteger(this.opts.maxDataBytes) || this.opts.maxDataBytes < 0) throw new FlockError(ErrorCode.BAD_OPTION, `maxDataBytes must be a non-negative integer (got ${this.opts.maxDataBytes})`);
    this.samples = new SampleCache(this.opts.maxDataBytes);
    this.clock = deps.clock ?? systemClock;
    this.rejoin = new Rejoin({ url: this.opts.url, peer: 'the coordinator', backoff: this.opts.backoff, giveUpAfterMs: this.opts.giveUpAfterMs },
      { logger: deps.logger, clock: this.clock, random: deps.random ?? Math.random });
    this.sessionOpts = { url: this.opts.url, name: this.opts.name, backendName: this.opts.backendLabel ?? deps.backend.name, adapter: deps.backend.adapter, ...(this.opts.localData ? { localData: this.opts.localData } : {}) };
  }

  async run(): Promise<WorkerOutcome> {
    try {
      const reason = await this.rejoin.run(async () => {
        this.session = new Session(this.sessionOpts, { logger: this.deps.logger, clock: this.clock, socket: this.deps.socket, runtime: (m) => this.runtime(m), samples: this.samples });
        try {
          return await this.session.start();
        } finally {
          this.session = undefined;
        }
      }, 'worker shutting down');
      return { reason };
    } finally {
      for (const r of this.runtimes.values()) r.dispose();
      this.runtimes.clear();
    }
  }

  /** Leaves gracefully: closes the connection normally; `run()` then resolves. */
  close(): void {
    this.rejoin.close();
    this.session?.close();
  }

  private runtime(model: ModelName): ModelRuntime {
    let r = this.runtimes.get(model);
    if (!r) {
      r = this.deps.runtime ? this.deps.runtime(this.deps.backend, modelSpec(model)) : new ModelRuntime(this.deps.backend, modelSpec(model));
      this.runtimes.set(model, r);
    }
    return r;
  }
}
