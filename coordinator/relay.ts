// A relay (`coordinator relay`): a process on a worker site that its workers join as if it
// were the coordinator, and that joins its upstream (the coordinator or another relay) as one
// worker able to take whole reduce groups. Downstream it is a WorkerPool (same admission,
// token, TLS, heartbeats, result checks and reassignment as the coordinator's); upstream it
// is an UpstreamLink like a worker's (hello with `relay: true`), takes assignments and
// evaluations one at a time, hands them to its pool and answers grouped assignments with one
// group sum per group (summed in the canonical order by the pool's StepSum), plain ones with
// one gradient per micro-batch. Weights come down once per relay and go to its workers from
// the pool's encoded copy; the images upstream sends are kept (SampleCache) and served to the
// relay's workers from there. When the link to upstream is lost, the relay rejoins with the
// worker's backoff (Rejoin) while its pool, its workers and the images stay as they are;
// upstream has meanwhile dealt the relay's groups to others, and deals it new ones.
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { datasetHash, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { modelSpec } from '../shared/models/spec.js';
import {
  MessageType, bytesToIndices, encode,
  type AssignMessage, type DatasetInfo, type EvaluateMessage, type VersionedWire, type WelcomeMessage,
} from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import type { TrainConfig } from '../shared/training/config.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { BACKOFF_DEFAULTS, type BackoffOptions } from '../worker/backoff.js';
import { REJOIN_DEFAULTS, Rejoin } from '../worker/rejoin.js';
import { DEFAULT_MAX_DATA_BYTES, SampleCache } from '../worker/sample-cache.js';
import type { SocketFactory } from '../worker/socket.js';
import { UpstreamLink, batchStatsToWire, violation, weightsFromUpstream, type LinkEnd, type WorkMessage } from '../worker/upstream-link.js';
import type { VersionedState } from './executor.js';
import type { PoolOptions } from './pool-options.js';
import { WorkerPool } from './worker-pool.js';

export interface RelayOptions {
  /** ws:// or wss:// address of the upstream (a coordinator or another relay). */
  readonly url: string;
  readonly name: string;
  /** The relay's own listener for its workers (token, TLS, limits: the coordinator's rules). */
  readonly pool: Partial<PoolOptions>;
  /** A local copy of the data: used instead of shipped images when its hash matches upstream's. */
  readonly localData?: { readonly train: Dataset; readonly validation: Dataset };
  /** Bytes the images sent by upstream may take at most. */
  readonly maxDataBytes: number;
  /** Delays between attempts to rejoin upstream (the worker's). */
  readonly backoff: BackoffOptions;
  /** Give up (and stop the relay's workers) after failing to rejoin upstream for this long. */
  readonly giveUpAfterMs: number;
}

export interface RelayDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Opens the upstream link, as a worker's session does (worker/node-socket.ts: token, CA for wss://). */
  readonly socket: SocketFactory;
  /** Uniform [0, 1) source for backoff jitter (default Math.random). */
  readonly random?: () => number;
}

/** A relay keeps and rejoins as a worker does. */
export const RELAY_DEFAULTS: Pick<RelayOptions, 'maxDataBytes' | 'backoff' | 'giveUpAfterMs'> = { ...REJOIN_DEFAULTS, maxDataBytes: DEFAULT_MAX_DATA_BYTES };

/** What the relay joined: fixed by the first welcome, the same for every later one. */
interface Joined {
  readonly pool: WorkerPool;
  readonly config: TrainConfig;
  readonly stores: ReturnType<SampleCache['stores']>;
}

export class Relay {
  private readonly opts: RelayOptions;
  private readonly samples: SampleCache;
  /** The local data's hashes, sent in every hello (hashed once: a relay rejoins). */
  private readonly dataHashes: DatasetInfo | undefined;
  private readonly rejoin: Rejoin;
  private link: UpstreamLink | undefined;
  /** Set once by the first welcome; later welcomes (rejoins) wait for it and must match it. */
  private joining: Promise<Joined> | undefined;
  private joined: Joined | undefined;
  private weights: VersionedState | undefined;
  /** The pool computes one piece of work at a time, whichever link it came on (a lost link's work runs out first). */
  private poolLane: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private stopReason: string | undefined;
  private readonly listening: Promise<string>;
  private onListening: ((url: string) => void) | undefined;

  constructor(opts: Partial<RelayOptions> & Pick<RelayOptions, 'url' | 'name' | 'pool'>, private readonly deps: RelayDeps) {
    this.opts = { ...RELAY_DEFAULTS, ...opts, backoff: { ...BACKOFF_DEFAULTS, ...opts.backoff } };
    this.samples = new SampleCache(this.opts.maxDataBytes);
    this.rejoin = new Rejoin({ url: this.opts.url, peer: 'upstream', backoff: this.opts.backoff, giveUpAfterMs: this.opts.giveUpAfterMs },
      { logger: deps.logger, clock: deps.clock, random: deps.random ?? Math.random });
    const local = this.opts.localData;
    this.dataHashes = local ? { train: datasetHash(local.train), validation: datasetHash(local.validation) } : undefined;
    this.listening = new Promise((resolve) => {
      this.onListening = resolve;
    });
  }

  /** Resolves with the relay's own URL once it listens for workers (after upstream's first welcome). */
  url(): Promise<string> {
    return this.listening;
  }

  /**
   * Joins upstream and relays, rejoining whenever the link is lost, until upstream says stop
   * or close() is called (resolves with the reason); rejects when the link fails for good or
   * upstream stays out of reach for giveUpAfterMs. Either way the relay's workers are told to stop.
   */
  async run(): Promise<string> {
    try {
      const reason = await this.rejoin.run(() => this.connect(), 'relay shutting down');
      await this.close(reason);
      return this.stopReason ?? reason;
    } catch (err) {
      await this.close(`relay failed: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    }
  }

  /** Leaves: closes upstream normally and tells the relay's workers to stop. Idempotent. */
  close(reason = 'relay shutting down'): Promise<void> {
    this.closing ??= this.shutdown(reason);
    return this.closing;
  }

  private async shutdown(reason: string): Promise<void> {
    this.stopReason = reason;
    this.rejoin.close();
    this.link?.close(reason);
    // A listener still starting is closed once it listens.
    const joined = await this.joining?.catch(() => undefined);
    await joined?.pool.close(`relay stopping: ${reason}`);
  }

  private connect(): Promise<LinkEnd> {
    const link: UpstreamLink = new UpstreamLink({ url: this.opts.url, peer: `upstream ${this.opts.url}`, stopAtOnce: true }, {
      hello: () => this.hello(),
      welcome: (msg) => this.onWelcome(link, msg),
      work: (msg) => this.onWork(link, msg),
    }, this.deps);
    this.link = link;
    return link.start();
  }

  private hello(): Uint8Array {
    const { dataHashes } = this;
    const held = this.samples.held();
    return encode({ type: MessageType.HELLO, name: this.opts.name, backend: 'relay', adapter: 'relay (sums whole groups)', relay: true, ...(dataHashes ? { dataHashes } : {}), ...(held ? { held } : {}) });
  }

  private onWork(link: UpstreamLink, msg: WorkMessage): Promise<void> {
    switch (msg.type) {
      case MessageType.ASSIGN:
        return this.onAssign(link, msg);
      case MessageType.EVALUATE:
        return this.onEvaluate(link, msg);
    }
  }

  private async onWelcome(link: UpstreamLink, msg: WelcomeMessage): Promise<void> {
    const stores = this.samples.stores(msg, this.opts.localData);
    const first = this.joining === undefined;
    this.joining ??= this.listen(msg, stores);
    const joined = await this.joining;
    if (this.closing) return;
    // A rejoin: the same run (config, data) keeps the pool, its workers and the images.
    if (!first && (stores !== joined.stores || JSON.stringify(msg.config) !== JSON.stringify(joined.config))) {
      throw new FlockError(ErrorCode.MODEL_MISMATCH, `upstream ${this.opts.url} now runs another training (its config or data set differs from the one this relay joined); restart the relay to join it`);
    }
    if (msg.weights) this.setWeights(msg.weights);
    if (!first) {
      link.log.info({ event: 'relay_rejoined', upstream: this.opts.url, url: joined.pool.url }, `relay rejoined ${this.opts.url} as worker ${msg.workerId}; its workers stayed connected`);
      return;
    }
    link.log.info({ event: 'relay_ready', upstream: this.opts.url, url: joined.pool.url, model: msg.config.model, reduceGroup: msg.config.reduceGroup ?? 0 },
      `relay joined ${this.opts.url} as worker ${msg.workerId}; workers connect to ${joined.pool.url}`);
    this.onListening?.(joined.pool.url);
  }

  /** The relay's own listener, for the run the first welcome announces. */
  private async listen(msg: WelcomeMessage, stores: Joined['stores']): Promise<Joined> {
    const pool = await WorkerPool.listen(this.opts.pool, {
      logger: this.deps.logger.child({ relayOf: msg.workerId }), clock: this.deps.clock, model: modelSpec(msg.config.model), config: msg.config,
      train: stores.train.dataset(), validation: stores.validation.dataset(), hashes: msg.hashes,
    });
    this.joined = { pool, config: msg.config, stores };
    return this.joined;
  }

  private setWeights(w: VersionedWire): void {
    // float16 runs send parameters as binary16; the pool re-encodes them losslessly.
    this.weights = { version: w.version, state: weightsFromUpstream(modelSpec(this.joined!.config.model), w.version, w) };
  }

  private atVersion(version: number): VersionedState {
    if (this.weights?.version !== version) throw violation(`work at weights version ${version}, but this relay holds version ${this.weights?.version ?? -1}`);
    return this.weights;
  }

  private units(list: AssignMessage['microBatches']): MicroBatch[] {
    return list.map((u) => ({ id: u.id, indices: bytesToIndices(u.indices) }));
  }

  /**
   * Runs work on the pool once the work before it (maybe a lost link's) is done; undefined
   * when `link` ended meanwhile. When the pool cannot finish it (its workers failed it),
   * upstream is told and the relay leaves.
   */
  private onPool<T>(link: UpstreamLink, f: (pool: WorkerPool) => Promise<T>): Promise<T | undefined> {
    const pool = this.joined!.pool;
    const turn = this.poolLane.then(() => (link.ended ? undefined : link.compute(() => f(pool), `relay ${this.opts.name} could not finish its work`)));
    this.poolLane = turn.catch(() => undefined);
    return turn;
  }

  private async onAssign(link: UpstreamLink, msg: AssignMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights);
    const weights = this.atVersion(msg.weightsVersion);
    this.joined!.stores.train.add(msg.samples);
    const start = this.deps.clock.now();
    // Grouped: the config's reduce groups, one sum each. Plain: every micro-batch its own
    // group, whose sum (0 + g) adds into any sum exactly as g does.
    const reduceGroup = msg.grouped ? this.joined!.config.reduceGroup ?? 0 : 1;
    const outcome = await this.onPool(link, (pool) => pool.gradients({ epoch: msg.epoch, globalStep: msg.step, microBatches: this.units(msg.microBatches), reduceGroup }, weights));
    if (outcome === undefined || link.ended) return;
    const byId = new Map<number, (typeof outcome.results)[number]>();
    [...msg.microBatches].map((u) => u.id).sort((a, b) => a - b).forEach((id, i) => byId.set(id, outcome.results[i]!));
    const computeMs = this.deps.clock.now() - start;
    const statsOf = (id: number): { lossSum: number; correct: number; count: number; batchStats: { mean: Uint8Array; variance: Uint8Array }[] } => {
      const r = byId.get(id)!;
      return { lossSum: r.lossSum, correct: r.correct, count: r.count, batchStats: batchStatsToWire(r.batchStats) };
    };
    for (const g of outcome.groups ?? []) {
      const grads = g.sums.map((t) => float32ToBytes(t));
      if (msg.grouped) {
        link.send(encode({ type: MessageType.GROUP_SUM, step: msg.step, group: g.group, grads, parts: g.ids.map((id) => ({ microBatch: id, ...statsOf(id) })), computeMs }));
      } else {
        const id = g.ids[0]!;
        link.send(encode({ type: MessageType.GRADIENT, step: msg.step, microBatch: id, grads, ...statsOf(id), computeMs: computeMs / outcome.groups!.length }));
      }
    }
  }

  private async onEvaluate(link: UpstreamLink, msg: EvaluateMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights);
    const weights = this.atVersion(msg.weightsVersion);
    this.joined!.stores[msg.split].add(msg.samples);
    const start = this.deps.clock.now();
    const chunks = this.units(msg.chunks);
    const results = await this.onPool(link, (pool) => pool.evaluate(msg.split, chunks, weights));
    if (results === undefined || link.ended) return;
    const computeMs = (this.deps.clock.now() - start) / Math.max(1, chunks.length);
    [...chunks].sort((a, b) => a.id - b.id).forEach((c, i) => {
      const r = results[i]!;
      link.send(encode({ type: MessageType.EVALUATION, requestId: msg.requestId, chunk: c.id, lossSum: r.lossSum, correct: r.correct, count: r.count, computeMs }));
    });
  }
}
