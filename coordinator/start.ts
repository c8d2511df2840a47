// `coordinator start`: load data, resume or initialise, train through an executor (this
// process, or workers over WebSockets), checkpoint, and export the final model.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ComputeBackend } from '../shared/backend.js';
import type { Clock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import { errorMessage } from '../shared/errors.js';
import { modelSpec } from '../shared/models/spec.js';
import { CheckpointStore, type Checkpoint } from './checkpoint.js';
import type { Evidence } from './quarantine.js';
import type { Executor } from './executor.js';
import { exportLayersModel } from './export-tfjs.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { Trainer, type TrainerDeps, type TrainResult } from './trainer.js';

export interface StartOptions {
  readonly train: Partial<TrainConfig>;
  readonly dataDir: string;
  readonly checkpointDir: string;
  /** Steps between mid-epoch checkpoints; 0 = epoch ends only. */
  readonly checkpointEvery: number;
  readonly resume: boolean;
  /** Where the final TensorFlow.js model goes; default `<checkpointDir>/model`. */
  readonly exportDir?: string;
}

export interface StartDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly signal?: AbortSignal;
  /** Told after every training step. */
  readonly onStep?: TrainerDeps['onStep'];
  /** Backend used to export the final model (and by the in-process executor). */
  readonly backend: ComputeBackend;
  /**
   * Builds the executor once data and config are known; `workersAtStart` is how many
   * participants the default micro-batch divides the batch by.
   */
  /** `quarantined`: the workers the resumed run had quarantined (none for a new run). */
  readonly executor: (ctx: { train: Dataset; validation: Dataset; resolve: (workersAtStart: number) => TrainConfig; quarantined: readonly Evidence[] }) => Promise<{ executor: Executor; config: TrainConfig; close?: () => Promise<void> }>;
}

export interface StartResult extends TrainResult {
  readonly exportedTo?: string;
}

async function findResume(opts: StartOptions, logger: Logger): Promise<Checkpoint | undefined> {
  if (!opts.resume) return undefined;
  const store = new CheckpointStore(opts.checkpointDir);
  const found = await store.newest((file, err) => logger.warn({ event: 'checkpoint_skipped', file, err: errorMessage(err) }, `skipping unreadable checkpoint ${file}`));
  if (!found) {
    logger.info({ event: 'resume', checkpointDir: opts.checkpointDir }, `no checkpoint in ${opts.checkpointDir}; starting from scratch`);
    return undefined;
  }
  logger.info({ event: 'resume', file: found.file, epoch: found.checkpoint.epoch, globalStep: found.checkpoint.globalStep }, `resuming from ${found.file}`);
  return found.checkpoint;
}

/** Training flags that differ from a resumed run's recorded configuration are ignored: say so. */
function warnIgnoredFlags(given: Partial<TrainConfig>, recorded: TrainConfig, logger: Logger): void {
  const ignored = (Object.keys(given) as (keyof TrainConfig)[])
    .filter((k) => k !== 'epochs' && given[k] !== undefined && given[k] !== recorded[k]);
  if (ignored.length > 0) {
    logger.warn({ event: 'resume_flags_ignored', flags: ignored, recorded },
      `resuming keeps the run's recorded ${ignored.join(', ')}; flags that change them are ignored (only --epochs may extend a run)`);
  }
}

export async function start(opts: StartOptions, deps: StartDeps): Promise<StartResult> {
  const { logger } = deps;
  const { train, validation } = await loadCifar(opts.dataDir);
  logger.info({ event: 'data', dir: opts.dataDir, train: train.count, validation: validation.count }, `loaded ${train.count} training and ${validation.count} validation images`);
  const resume = await findResume(opts, logger);
  // A resumed run keeps its recorded configuration (so the math continues unchanged);
  // only --epochs may extend it.
  if (resume) warnIgnoredFlags(opts.train, resume.config, logger);
  const resolve = (workersAtStart: number): TrainConfig =>
    resume ? { ...resume.config, epochs: opts.train.epochs ?? resume.config.epochs } : resolveTrainConfig(opts.train, workersAtStart);
  const { executor, config, close } = await deps.executor({ train, validation, resolve, quarantined: resume?.quarantined ?? [] });
  try {
    logger.info({ event: 'config', ...config }, 'training configuration');
    const store = new CheckpointStore(opts.checkpointDir);
    const trainer = new Trainer(config, { executor, logger, clock: deps.clock, store, signal: deps.signal, onStep: deps.onStep }, {
      trainCount: train.count,
      validationCount: validation.count,
      checkpointEvery: opts.checkpointEvery,
    }, resume);
    const result = await trainer.run();
    if (!result.completed) return result;
    const exportDir = opts.exportDir ?? join(opts.checkpointDir, 'model');
    const exportedTo = await exportLayersModel(deps.backend.tf, modelSpec(config.model), result.state, exportDir);
    logger.info({ event: 'export', file: exportedTo }, `TensorFlow.js model written to ${exportedTo}`);
    return { ...result, exportedTo };
  } finally {
    await close?.();
  }
}
