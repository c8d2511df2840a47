// One connection of a worker to the coordinator: hello, welcome, then weights, assignments
// and evaluations until `stop` or until the connection ends. The connection itself (decoding,
// arrival order, watchdog, close codes, failure reports) is an UpstreamLink, as a relay's is;
// this file computes. The event loop is yielded between units so pings get their pongs.
// Free of Node-only imports: the socket comes from a factory, and the browser worker (join/)
// bundles this file unchanged.
import type { Logger } from 'pino';
import type { TrainConfig } from '../shared/training/config.js';
import type { Clock } from '../shared/clock.js';
import type { Dataset } from '../shared/data/dataset.js';

import type { ModelName } from '../shared/models/layers.js';
import type { ModelRuntime } from '../shared/models/runtime.js';
import {
  MessageType, bytesToIndices, encode, halfTensors,
  type AssignMessage, type DatasetInfo, type EvaluateMessage, type WelcomeMessage, type WireState,
} from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import { dropoutSeed } from '../shared/training/schedule.js';
import type { SampleCache, SplitStores } from './sample-cache.js';
import { yieldToEventLoop, type SocketFactory } from './socket.js';
import { UpstreamLink, batchStatsToWire, violation, weightsFromUpstream, type LinkEnd, type WorkMessage } from './upstream-link.js';

/** How a session ended, when it was not a fatal error (those reject). */
export type SessionEnd = LinkEnd;

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

export class Session {
  private readonly link: UpstreamLink;
  private run: Run | undefined;

  constructor(private readonly opts: SessionOptions, private readonly deps: SessionDeps) {
    this.link = new UpstreamLink({ url: opts.url, peer: 'the coordinator', stopAtOnce: false }, {
      hello: () => this.hello(),
      welcome: (msg) => this.onWelcome(msg),
      work: (msg) => this.onWork(msg),
    }, deps);
  }

  /** Connects and serves until the session ends; rejects only on errors a retry cannot fix. */
  start(): Promise<SessionEnd> {
    return this.link.start();
  }

  /** Leaves gracefully (closing the socket normally); the session ends as stopped. */
  close(): void {
    this.link.close('worker shutting down');
  }

  private hello(): Uint8Array {
    const local = this.opts.localData;
    const held = this.deps.samples.held();
    return encode({ type: MessageType.HELLO, name: this.opts.name, backend: this.opts.backendName, adapter: this.opts.adapter, ...(local ? { dataHashes: local.hashes } : {}), ...(held ? { held } : {}) });
  }

  private onWork(msg: WorkMessage): Promise<void> {
    switch (msg.type) {
      case MessageType.ASSIGN:
        return this.onAssign(msg);
      case MessageType.EVALUATE:
        return this.onEvaluate(msg);
    }
  }

  private onWelcome(msg: WelcomeMessage): void {
    const stores = this.deps.samples.stores(msg, this.opts.localData?.data);
    this.run = { config: msg.config, runtime: this.deps.runtime(msg.config.model), stores, weightsVersion: -1 };
    if (msg.weights) this.setWeights(msg.weights.version, msg.weights);
    this.link.log.info({ event: 'welcomed', model: msg.config.model, localData: msg.localData }, `joined as worker ${msg.workerId} (model ${msg.config.model})`);
  }

  private setWeights(version: number, wire: WireState): void {
    const run = this.run!;
    run.runtime.setState(weightsFromUpstream(run.runtime.model, version, wire));
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
      if (this.link.ended) return;
      const batch = run.stores.train.batch(bytesToIndices(mb.indices));
      const start = this.deps.clock.now();
      const r = await this.compute(() => run.runtime.gradients(batch, dropoutSeed(run.config.seed, msg.step, mb.id)));
      // --wire-precision float16: half the bytes, unless a value is beyond binary16's range.
      const half = run.config.wirePrecision === 'float16' ? halfTensors(r.grads) : undefined;
      this.link.send(encode({
        type: MessageType.GRADIENT, step: msg.step, microBatch: mb.id,
        grads: half ?? r.grads.map(float32ToBytes), ...(half ? { half: true } : {}), lossSum: r.lossSum, correct: r.correct, count: r.count,
        batchStats: batchStatsToWire(r.batchStats),
        computeMs: this.deps.clock.now() - start,
      }));
      this.link.log.debug({ event: 'gradient', step: msg.step, microBatch: mb.id, count: r.count }, 'gradient sent');
      await yieldToEventLoop();
    }
  }

  private async onEvaluate(msg: EvaluateMessage): Promise<void> {
    if (msg.weights) this.setWeights(msg.weights.version, msg.weights);
    const run = this.checkVersion(msg.weightsVersion);
    const store = run.stores[msg.split];
    store.add(msg.samples);
    for (const chunk of msg.chunks) {
      if (this.link.ended) return;
      const batch = store.batch(bytesToIndices(chunk.indices));
      const start = this.deps.clock.now();
      const r = await this.compute(() => run.runtime.evaluate(batch));
      this.link.send(encode({ type: MessageType.EVALUATION, requestId: msg.requestId, chunk: chunk.id, lossSum: r.lossSum, correct: r.correct, count: r.count, computeMs: this.deps.clock.now() - start }));
      await yieldToEventLoop();
    }
  }

  /** Runs a computation; a backend failure is reported to the coordinator, then ends the worker. */
  private compute<T>(f: () => Promise<T>): Promise<T> {
    return this.link.compute(f, `computation failed on the ${this.opts.backendName} backend`);
  }
}
