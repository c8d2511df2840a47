// A relay (`coordinator relay`): a process on a worker site that its workers join as if it
// were the coordinator, and that joins its upstream (the coordinator or another relay) as one
// worker able to take whole reduce groups. Downstream it is a WorkerPool (same admission,
// token, TLS, heartbeats, result checks and reassignment as the coordinator's); upstream it
// says hello with `relay: true`, takes assignments and evaluations one at a time, hands them
// to its pool and answers grouped assignments with one group sum per group (summed in the
// canonical order by the pool's StepSum), plain ones with one gradient per micro-batch.
// Weights come down once per relay and go to its workers from the pool's encoded copy; the
// images upstream sends are kept (SampleCache) and served to the relay's workers from there.
import type { Logger } from 'pino';
import WebSocket, { type RawData } from 'ws';
import type { Clock } from '../shared/clock.js';
import { datasetHash, type Dataset } from '../shared/data/cifar.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import { modelSpec } from '../shared/models/spec.js';
import {
  CLOSE_GRACE_MS, MessageType, NORMAL_CLOSURE, bytesToIndices, closeCodeFor, closeReason, decode, encode, errorOfClose, wireToState,
  type AssignMessage, type CoordinatorMessage, type EvaluateMessage, type VersionedWire, type WelcomeMessage,
} from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import type { TrainConfig } from '../shared/training/config.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { SampleCache } from '../worker/sample-cache.js';
import type { VersionedState } from './executor.js';
import type { PoolOptions } from './pool-options.js';
import { WorkerPool } from './worker-pool.js';

export interface RelayOptions {
  /** ws:// or wss:// address of the upstream (a coordinator or another relay). */
  readonly url: string;
  readonly name: string;
  /** Token presented upstream. */
  readonly token?: string;
  /** CA certificate(s) to trust for an upstream wss://. */
  readonly ca?: string | Buffer;
  /** The relay's own listener for its workers (token, TLS, limits: the coordinator's rules). */
  readonly pool: Partial<PoolOptions>;
  /** A local copy of the data: used instead of shipped images when its hash matches upstream's. */
  readonly localData?: { readonly train: Dataset; readonly validation: Dataset };
  /** Bytes the images sent by upstream may take at most. */
  readonly maxDataBytes: number;
}

export interface RelayDeps {
  readonly logger: Logger;
  readonly clock: Clock;
}

export const RELAY_DEFAULTS: Pick<RelayOptions, 'maxDataBytes'> = { maxDataBytes: 512 * 2 ** 20 };

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

function violation(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

export class Relay {
  private readonly opts: RelayOptions;
  private ws: WebSocket | undefined;
  private pool: WorkerPool | undefined;
  private config: TrainConfig | undefined;
  private weights: VersionedState | undefined;
  private readonly samples: SampleCache;
  private stores: ReturnType<SampleCache['stores']> | undefined;
  private queue: Promise<void> = Promise.resolve();
  private settled = false;
  private settle: { resolve: (reason: string) => void; reject: (err: Error) => void } | undefined;
  private readonly listening: Promise<string>;
  private onListening: ((url: string) => void) | undefined;

  constructor(opts: Partial<RelayOptions> & Pick<RelayOptions, 'url' | 'name' | 'pool'>, private readonly deps: RelayDeps) {
    this.opts = { ...RELAY_DEFAULTS, ...opts };
    this.samples = new SampleCache(this.opts.maxDataBytes);
    this.listening = new Promise((resolve) => {
      this.onListening = resolve;
    });
  }

  /** Resolves with the relay's own URL once it listens for workers (after upstream's welcome). */
  url(): Promise<string> {
    return this.listening;
  }

  /** Connects upstream and relays until upstream says stop (resolves with its reason) or the link fails (rejects). */
  run(): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      this.settle = { resolve, reject };
      const headers = this.opts.token !== undefined ? { Authorization: `Bearer ${this.opts.token}` } : undefined;
      const ws = new WebSocket(this.opts.url, { headers, ca: this.opts.ca, perMessageDeflate: false, handshakeTimeout: 30_000, generateMask: zeroMask });
      this.ws = ws;
      ws.on('open', () => this.onOpen());
      ws.on('message', (data: RawData, isBinary: boolean) => this.onFrame(data, isBinary));
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        this.fail(status === 401
          ? new FlockError(ErrorCode.UNAUTHORIZED, `upstream ${this.opts.url} rejected this relay's token (HTTP 401); pass the coordinator's token with --token or FLOCK_TOKEN`)
          : new FlockError(ErrorCode.PROTOCOL, `${this.opts.url} answered HTTP ${status} instead of a WebSocket upgrade; is it a Flock coordinator?`));
      });
      ws.on('error', (err) => this.fail(new FlockError(ErrorCode.TIMEOUT, `connection to upstream ${this.opts.url} failed: ${err.message}`, { cause: err })));
      ws.on('close', (code: number, reason: Buffer) => this.onClose(code, reason.toString('utf8')));
    });
  }

  /** Leaves: tells the relay's workers to stop, closes upstream normally. Idempotent. */
  close(reason = 'relay shutting down'): Promise<void> {
    return this.finish(NORMAL_CLOSURE, reason).then(() => this.settle?.resolve(reason));
  }

  private onOpen(): void {
    const local = this.opts.localData;
    const dataHashes = local ? { train: datasetHash(local.train), validation: datasetHash(local.validation) } : undefined;
    this.deps.logger.info({ event: 'connected', url: this.opts.url }, `relay connected to ${this.opts.url}`);
    this.send(encode({ type: MessageType.HELLO, name: this.opts.name, backend: 'relay', adapter: 'relay (sums whole groups)', relay: true, ...(dataHashes ? { dataHashes } : {}) }));
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    if (this.settled) return;
    let msg: CoordinatorMessage;
    try {
      if (!isBinary || !(data instanceof Uint8Array)) throw violation('frames must be single binary messages');
      msg = decode(data, 'coordinator');
    } catch (err) {
      return this.fail(err);
    }
    if (msg.type === MessageType.STOP) {
      // Not queued: a step in progress is abandoned with the pool.
      this.deps.logger.info({ event: 'stop', reason: msg.reason }, `upstream says stop: ${msg.reason}`);
      void this.close(msg.reason);
      return;
    }
    this.queue = this.queue.then(() => this.handle(msg)).catch((err: unknown) => this.fail(err));
  }

  private async handle(msg: CoordinatorMessage): Promise<void> {
    if (this.settled) return;
    if (msg.type !== MessageType.WELCOME && !this.pool) throw violation(`message type ${msg.type} before welcome`);
    switch (msg.type) {
      case MessageType.WELCOME:
        return this.onWelcome(msg);
      case MessageType.ASSIGN:
        return this.onAssign(msg);
      case MessageType.EVALUATE:
        return this.onEvaluate(msg);
      case MessageType.STOP:
        return;
    }
  }

  private async onWelcome(msg: WelcomeMessage): Promise<void> {
    if (this.pool) throw violation('second welcome');
    const stores = this.samples.stores(msg, this.opts.localData);
    this.config = msg.config;
    const log = this.deps.logger.child({ relayOf: msg.workerId });
    const pool = await WorkerPool.listen(this.opts.pool, {
      logger: log, clock: this.deps.clock, model: modelSpec(msg.config.model), config: msg.config,
      train: stores.train.dataset(), validation: stores.validation.dataset(), hashes: msg.hashes,
    });
    // Upstream may have said stop (or the link failed) while the listener was starting.
    if (this.settled) return pool.close('relay stopping');
    this.pool = pool;
    if (msg.weights) this.setWeights(msg.weights);
    log.info({ event: 'relay_ready', upstream: this.opts.url, url: this.pool.url, model: msg.config.model, reduceGroup: msg.config.reduceGroup ?? 0 },
      `relay joined ${this.opts.url} as worker ${msg.workerId}; workers connect to ${this.pool.url}`);
    this.stores = stores;
    this.onListening?.(this.pool.url);
  }

  private setWeights(w: VersionedWire): void {
    const model = modelSpec(this.config!.model);
    // float16 runs send parameters as binary16 (2 bytes a value); the pool re-encodes them losslessly.
    const paramBytes = w.half ? 2 : 4;
    const ok = w.params.length === model.params.length && w.params.every((p, i) => p.byteLength === model.params[i]!.size * paramBytes)
      && w.buffers.length === model.buffers.length && w.buffers.every((b, i) => b.byteLength === model.buffers[i]!.size * 4);
    if (!ok) throw new FlockError(ErrorCode.MODEL_MISMATCH, `weights version ${w.version} do not match model ${model.name}`);
    this.weights = { version: w.version, state: wireToState(w) };
  }

  private atVersion(version: number): VersionedState {
    if (this.weights?.version !== version) throw violation(`work at weights version ${version}, but this relay holds version ${this.weights?.version ?? -1}`);
    return this.weights;
  }

  private units(list: AssignMessage['microBatches']): MicroBatch[] {
    return list.map((u) => ({ id: u.id, indices: bytesToIndices(u.indices) }));
  }

  private async onAssign(msg: AssignMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights);
    const weights = this.atVersion(msg.weightsVersion);
    this.stores!.train.add(msg.samples);
    const start = this.deps.clock.now();
    // Grouped: the config's reduce groups, one sum each. Plain: every micro-batch its own
    // group, whose sum (0 + g) adds into any sum exactly as g does.
    const reduceGroup = msg.grouped ? this.config!.reduceGroup ?? 0 : 1;
    const outcome = await this.compute(() => this.pool!.gradients({ epoch: msg.epoch, globalStep: msg.step, microBatches: this.units(msg.microBatches), reduceGroup }, weights));
    if (this.settled) return;
    const byId = new Map<number, (typeof outcome.results)[number]>();
    [...msg.microBatches].map((u) => u.id).sort((a, b) => a - b).forEach((id, i) => byId.set(id, outcome.results[i]!));
    const computeMs = this.deps.clock.now() - start;
    const statsOf = (id: number): { lossSum: number; correct: number; count: number; batchStats: { mean: Uint8Array; variance: Uint8Array }[] } => {
      const r = byId.get(id)!;
      return { lossSum: r.lossSum, correct: r.correct, count: r.count, batchStats: r.batchStats.map((s) => ({ mean: float32ToBytes(s.mean), variance: float32ToBytes(s.variance) })) };
    };
    for (const g of outcome.groups ?? []) {
      const grads = g.sums.map((t) => float32ToBytes(t));
      if (msg.grouped) {
        this.send(encode({ type: MessageType.GROUP_SUM, step: msg.step, group: g.group, grads, parts: g.ids.map((id) => ({ microBatch: id, ...statsOf(id) })), computeMs }));
      } else {
        const id = g.ids[0]!;
        this.send(encode({ type: MessageType.GRADIENT, step: msg.step, microBatch: id, grads, ...statsOf(id), computeMs: computeMs / outcome.groups!.length }));
      }
    }
  }

  private async onEvaluate(msg: EvaluateMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights);
    const weights = this.atVersion(msg.weightsVersion);
    this.stores![msg.split].add(msg.samples);
    const start = this.deps.clock.now();
    const chunks = this.units(msg.chunks);
    const results = await this.compute(() => this.pool!.evaluate(msg.split, chunks, weights));
    if (this.settled) return;
    const computeMs = (this.deps.clock.now() - start) / Math.max(1, chunks.length);
    [...chunks].sort((a, b) => a.id - b.id).forEach((c, i) => {
      const r = results[i]!;
      this.send(encode({ type: MessageType.EVALUATION, requestId: msg.requestId, chunk: c.id, lossSum: r.lossSum, correct: r.correct, count: r.count, computeMs }));
    });
  }

  /** Runs work on the pool; when the pool cannot finish it (its workers failed it), upstream is told, then the relay leaves. */
  private async compute<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (this.settled) throw err;
      const e = new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `relay ${this.opts.name} could not finish its work: ${errorMessage(err)}`, { cause: err });
      this.send(encode({ type: MessageType.FAILURE, code: e.code, message: e.message }));
      throw e;
    }
  }

  private send(frame: Uint8Array): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(frame, { binary: true }, (err) => {
      if (err) this.fail(new FlockError(ErrorCode.TIMEOUT, `send to upstream failed: ${err.message}`));
    });
  }

  private onClose(code: number, reason: string): void {
    if (this.settled) return;
    const why = reason === '' ? `code ${code}` : `${code}: ${reason}`;
    if (code === NORMAL_CLOSURE) {
      void this.close(`upstream closed the connection (${why})`);
      return;
    }
    const err = errorOfClose(code, reason);
    this.fail(new FlockError(err?.code ?? ErrorCode.TIMEOUT, `upstream ${this.opts.url} closed the connection (${why}); its workers are told to stop`));
  }

  private fail(err: unknown): void {
    if (this.settled) return;
    const e = err instanceof Error ? err : new Error(String(err));
    void this.finish(closeCodeFor(e), errorMessage(e)).then(() => this.settle?.reject(e));
  }

  /** Closes the pool (its workers get stop) and the upstream socket. */
  private async finish(closeCode: number | undefined, reason: string): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN && closeCode !== undefined) {
      ws.close(closeCode, closeReason(reason));
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    } else {
      ws?.terminate();
    }
    await this.pool?.close(`relay stopping: ${reason}`);
  }
}
