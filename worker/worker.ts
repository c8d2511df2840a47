// The Node worker: the worker loop (worker-loop.ts) over `ws`, with the token header, an
// optional CA for wss://, and a local copy of the data identified by its hashes.
import { datasetHash, type Dataset } from '../shared/data/cifar.js';
import { nodeSocketFactory } from './node-socket.js';
import { WORKER_DEFAULTS, WorkerLoop, type WorkerLoopDeps, type WorkerLoopOptions, type WorkerOutcome } from './worker-loop.js';

export { WORKER_DEFAULTS, type WorkerOutcome };

export interface WorkerOptions extends Omit<WorkerLoopOptions, 'localData'> {
  readonly token?: string;
  /** CA certificate(s) to trust for wss://. */
  readonly ca?: string | Buffer;
  /** A local copy of the data; used instead of shipped images when its hash matches. */
  readonly localData?: { readonly train: Dataset; readonly validation: Dataset };
}

export type WorkerDeps = Omit<WorkerLoopDeps, 'socket'>;

export class Worker {
  private readonly loop: WorkerLoop;

  constructor(opts: Partial<WorkerOptions> & Pick<WorkerOptions, 'url' | 'name'>, deps: WorkerDeps) {
    const { token, ca, localData, ...rest } = opts;
    const local = localData ? { data: localData, hashes: { train: datasetHash(localData.train), validation: datasetHash(localData.validation) } } : undefined;
    this.loop = new WorkerLoop({ ...rest, ...(local ? { localData: local } : {}) }, { ...deps, socket: nodeSocketFactory({ token, ca }) });
  }

  run(): Promise<WorkerOutcome> {
    return this.loop.run();
  }

  /** Leaves gracefully: closes the connection normally; `run()` then resolves. */
  close(): void {
    this.loop.close();
  }
}
