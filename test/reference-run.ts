// What the end-to-end training tests share: a synthetic CIFAR-10 folder made for the suite
// (removed after it) with its data loaded and the training backend, a Trainer over any
// executor, the in-process run that every distributed, relayed or disturbed run must match
// bit for bit, and the checks of a coordinator CLI run's checkpoints against the undisturbed run's.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';

import { join } from 'node:path';
import { before } from 'node:test';
import type { Logger } from 'pino';
import { readCheckpointFile, type Checkpoint } from '../coordinator/checkpoint.js';
import type { Executor } from '../coordinator/executor.js';
import type { EpochMetrics } from '../coordinator/metrics.js';
import type { WorkerPool } from '../coordinator/worker-pool.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import { Trainer, type TrainerOptions, type TrainResult } from '../coordinator/trainer.js';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import type { SyntheticOptions } from '../shared/data/synthetic.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec, type ModelState } from '../shared/models/spec.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import type { TrainConfig } from '../shared/training/config.js';
import { reap, type Proc } from './child-procs.js';
import { silentLogger, trainingBackend, useSyntheticCifar } from './helpers.js';
import type { LogEvent } from './log-recorder.js';

export interface TrainingData {
  readonly dir: string;
  readonly train: Dataset;
  readonly validation: Dataset;
  readonly backend: ComputeBackend;
}

/**
 * Registers the suite's hooks: before it, a synthetic data set in a fresh temporary folder,
 * loaded, and the training backend; after it, the folder removed. The returned object is
 * filled in by the time the first test runs.
 */
export function useTrainingData(prefix: string, synthetic: Partial<SyntheticOptions>): TrainingData {
  const synth = useSyntheticCifar(prefix, synthetic);
  const data = {} as { dir: string; train: Dataset; validation: Dataset; backend: ComputeBackend };
  before(async () => {
    data.backend = await trainingBackend();
    data.dir = synth.dataDir;
    ({ train: data.train, validation: data.validation } = await loadCifar(data.dir));
  });
  return data;
}

export type RunSizes = Partial<TrainerOptions> & Pick<TrainerOptions, 'trainCount' | 'validationCount'>;

/** Trains `config` through `executor` (the pool, a wrapped pool, or the in-process executor). */
export function trainWith(config: TrainConfig, executor: Executor, sizes: RunSizes, logger: Logger = silentLogger()): Promise<TrainResult> {
  return new Trainer(config, { executor, logger, clock: systemClock }, sizes).run();
}

/** The in-process run of `config` on the suite's backend: the reference. */
export async function trainInProcess(data: TrainingData, config: TrainConfig, sizes: RunSizes): Promise<TrainResult> {
  const runtime = new ModelRuntime(data.backend, modelSpec(config.model));
  try {
    return await trainWith(config, new LocalExecutor(runtime, data.train, data.validation, config.seed, systemClock), sizes);
  } finally {
    runtime.dispose();
  }
}

/**
 * Runs `train` (a run through `pool`), then closes the pool: every process of `procs` still
 * running, but `orphans`, must exit 0 on the stop. All of them are reaped whatever happens.
 */
export async function trainThenStop(pool: WorkerPool, procs: readonly Proc[], train: () => Promise<TrainResult>, orphans: ReadonlySet<string> = new Set()): Promise<TrainResult> {
  try {
    const result = await train();
    await pool.close();
    const exits = await Promise.all(procs.filter((p) => p.proc.signalCode === null && !orphans.has(p.name)).map(async (p) => ({ name: p.name, ...(await p.exited), out: p.output() })));
    for (const e of exits) assert.equal(e.code, 0, `${e.name} exits 0 on stop: ${e.out.slice(-2000)}`);
    return result;
  } finally {
    await pool.close();
    await reap(procs);
  }
}

/** The weights' bytes (parameters, then buffers), for bit-for-bit comparisons. */
function stateBytes(s: ModelState): Buffer {
  return Buffer.concat([...s.params, ...s.buffers].map(float32ToBytes));
}

export function sameState(a: ModelState, b: ModelState): boolean {
  return stateBytes(a).equals(stateBytes(b));
}

/**
 * Each weight of `got` within `rel` x its tensor's largest |value| (plus `abs`) of `want`'s:
 * for runs that round differently (another backend, float16 on the wire).
 */
export function assertCloseState(got: ModelState, want: ModelState, rel: number, abs: number): void {
  const wants = [...want.params, ...want.buffers];
  [...got.params, ...got.buffers].forEach((g, k) => {
    const w = wants[k]!;
    let scale = 0;
    let worst = 0;
    for (let i = 0; i < w.length; i++) {
      scale = Math.max(scale, Math.abs(w[i]!));
      worst = Math.max(worst, Math.abs(g[i]! - w[i]!));
    }
    assert.ok(worst <= rel * scale + abs, `tensor ${k}: max |diff| ${worst} > ${rel} x ${scale}`);
  });
}

/** Per epoch: the numbers a lost or repeated step would change (they are sums over the steps). */
export function epochMetrics(h: readonly EpochMetrics[]): number[][] {
  return h.map((m) => [m.epoch, m.steps, m.trainLoss, m.trainAccuracy, m.valLoss, m.valAccuracy]);
}

/** The file name of the checkpoint written after `step`. */
export function checkpointFile(step: number): string {
  return `checkpoint-${String(step).padStart(9, '0')}.flock`;
}

/** From a coordinator's log: each of the `steps` steps ran and was checkpointed exactly once, in order. */
export function assertCheckpointedOnce(log: readonly LogEvent[], steps: number): void {
  const written = log.filter((e) => e.event === 'checkpoint').map((e) => e.globalStep as number);
  assert.deepEqual(written, Array.from({ length: steps }, (_, i) => i + 1), 'each step ran and was checkpointed exactly once');
}

/** The newest checkpoint in `dir` is the undisturbed run's after `steps` steps: weights bit for bit, momentum, position and epoch metrics. */
export async function assertFinalCheckpoint(dir: string, steps: number, undisturbed: Checkpoint): Promise<Checkpoint> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.flock')).sort();
  assert.equal(files.at(-1), checkpointFile(steps));
  const final = await readCheckpointFile(join(dir, checkpointFile(steps)));
  assert.equal(final.globalStep, steps);
  assert.equal(final.epoch, undisturbed.epoch);
  assert.ok(sameState(final.state, undisturbed.state), 'final weights are bit-identical to the undisturbed run');
  assert.deepEqual(final.momentum, undisturbed.momentum);
  assert.deepEqual(epochMetrics(final.history), epochMetrics(undisturbed.history));
  return final;
}
