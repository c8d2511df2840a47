// Checkpoints: everything needed to continue a run exactly (weights, optimiser state,
// position, config, metric history), written atomically and checked on load.
import { createHash } from 'node:crypto';
import { open, readdir, readFile, rename, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import { modelSpec, type ModelState } from '../shared/models/spec.js';
import { bytesToFloat32, float32ToBytes } from '../shared/tensor-codec.js';
import type { TrainConfig } from '../shared/training/config.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import type { EpochMetrics } from './metrics.js';
import { isEvidence, type Evidence } from './quarantine.js';

const MAGIC = Buffer.from('FLOCKCKPT1\n');
const HASH_BYTES = 32;
export const CHECKPOINT_EXT = '.flock';

/** The running totals of the epoch in progress, so a resumed epoch reports the same metrics. */
export interface EpochProgress {
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
}

export interface Checkpoint {
  readonly config: TrainConfig;
  readonly state: ModelState;
  readonly momentum: Float32Array[];
  /** Position of the next step to run. */
  readonly epoch: number;
  readonly stepInEpoch: number;
  readonly globalStep: number;
  readonly progress: EpochProgress;
  readonly history: readonly EpochMetrics[];
  /** Workers proven wrong (issue 12): a resumed run goes on refusing them. Absent: none. */
  readonly quarantined?: readonly Evidence[];
}

interface Wire {
  format: 'flock-checkpoint';
  version: 1;
  config: TrainConfig;
  params: Uint8Array[];
  buffers: Uint8Array[];
  momentum: Uint8Array[];
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
  progress: EpochProgress;
  history: EpochMetrics[];
  /** Absent in checkpoints written before it existed (read as none). */
  quarantined?: Evidence[];
}

export function encodeCheckpoint(c: Checkpoint): Buffer {
  const wire: Wire = {
    format: 'flock-checkpoint',
    version: 1,
    config: c.config,
    params: c.state.params.map(float32ToBytes),
    buffers: c.state.buffers.map(float32ToBytes),
    momentum: c.momentum.map(float32ToBytes),
    epoch: c.epoch,
    stepInEpoch: c.stepInEpoch,
    globalStep: c.globalStep,
    progress: c.progress,
    history: [...c.history],
    quarantined: [...(c.quarantined ?? [])],
  };
  const payload = pack(wire);
  const hash = createHash('sha256').update(payload).digest();
  return Buffer.concat([MAGIC, hash, payload]);
}

function corrupt(file: string, what: string): FlockError {
  return new FlockError(ErrorCode.CHECKPOINT_CORRUPT, `checkpoint ${file} is corrupt (${what}); delete it to resume from the previous checkpoint, or start without --resume`);
}

const isBytesList = (v: unknown): v is Uint8Array[] => Array.isArray(v) && v.every((b) => b instanceof Uint8Array);

export function decodeCheckpoint(data: Buffer, file = 'checkpoint'): Checkpoint {
  if (data.length < MAGIC.length + HASH_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt(file, 'not a Flock checkpoint');
  const hash = data.subarray(MAGIC.length, MAGIC.length + HASH_BYTES);
  const payload = data.subarray(MAGIC.length + HASH_BYTES);
  if (!createHash('sha256').update(payload).digest().equals(hash)) throw corrupt(file, 'checksum mismatch: truncated or modified');
  let wire: Partial<Wire>;
  try {
    wire = unpack(payload) as Partial<Wire>;
  } catch (err) {
    throw corrupt(file, errorMessage(err));
  }
  if (wire.format !== 'flock-checkpoint' || wire.version !== 1) throw corrupt(file, 'unknown format or version');
  if (!isBytesList(wire.params) || !isBytesList(wire.buffers) || !isBytesList(wire.momentum)) throw corrupt(file, 'weights missing');
  let config: TrainConfig;
  try {
    config = resolveTrainConfig(wire.config ?? {}, 1);
  } catch (err) {
    throw corrupt(file, `bad config: ${errorMessage(err)}`);
  }
  const model = modelSpec(config.model);
  const params = wire.params.map(bytesToFloat32);
  const buffers = wire.buffers.map(bytesToFloat32);
  const shapesOk = params.length === model.params.length && params.every((p, i) => p.length === model.params[i]!.size)
    && buffers.length === model.buffers.length && buffers.every((b, i) => b.length === model.buffers[i]!.size);
  if (!shapesOk) throw corrupt(file, `weights do not match model ${config.model}`);
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const p = wire.progress;
  if (!num(wire.epoch) || !num(wire.stepInEpoch) || !num(wire.globalStep) || !p || !num(p.lossSum) || !num(p.correct) || !num(p.count) || !Array.isArray(wire.history)) {
    throw corrupt(file, 'position or history missing');
  }
  const quarantined = wire.quarantined ?? [];
  if (!Array.isArray(quarantined) || !quarantined.every(isEvidence)) throw corrupt(file, 'bad quarantine list');
  return {
    config,
    state: { params, buffers },
    momentum: wire.momentum.map(bytesToFloat32),
    epoch: wire.epoch,
    stepInEpoch: wire.stepInEpoch,
    globalStep: wire.globalStep,
    progress: p,
    history: wire.history,
    quarantined,
  };
}

/** Writes `data` to `path` atomically: temporary file, fsync, rename, fsync of the folder. */
export async function writeFileAtomic(path: string, data: Uint8Array, dir: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export async function readCheckpointFile(file: string): Promise<Checkpoint> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (err) {
    throw new FlockError(ErrorCode.CHECKPOINT_MISSING, `cannot read checkpoint ${file} (${errorMessage(err)}); check the path`);
  }
  return decodeCheckpoint(data, file);
}

const NAME = /^checkpoint-(\d{9})\.flock$/;

/** A folder of checkpoints named by global step; keeps the newest `keep`. */
export class CheckpointStore {
  constructor(readonly dir: string, private readonly keep = 3) {}

  private async list(): Promise<{ step: number; file: string }[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    return names.flatMap((n) => {
      const m = NAME.exec(n);
      return m ? [{ step: Number(m[1]), file: join(this.dir, n) }] : [];
    }).sort((a, b) => b.step - a.step);
  }

  async save(c: Checkpoint): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const file = join(this.dir, `checkpoint-${String(c.globalStep).padStart(9, '0')}${CHECKPOINT_EXT}`);
    await writeFileAtomic(file, encodeCheckpoint(c), this.dir);
    const old = (await this.list()).slice(this.keep);
    await Promise.all(old.map((o) => rm(o.file, { force: true })));
    return file;
  }

  /**
   * The newest checkpoint that reads back intact. A corrupt newer one is reported through
   * `onCorrupt` and skipped, so one bad write never throws away the run.
   */
  async newest(onCorrupt: (file: string, err: unknown) => void): Promise<{ file: string; checkpoint: Checkpoint } | undefined> {
    for (const { file } of await this.list()) {
      try {
        return { file, checkpoint: await readCheckpointFile(file) };
      } catch (err) {
        onCorrupt(file, err);
      }
    }
    return undefined;
  }
}
