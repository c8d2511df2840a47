// The training loop, shared by the in-process trainer and the distributed coordinator:
// plan the step, get micro-batch gradients from the executor, reduce them in order,
// step SGD, update batch-norm statistics, validate and checkpoint every epoch.
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { batchNormLayers, cloneState, initialState, modelSpec, type ModelState } from '../shared/models/spec.js';
import { planEpoch, validationChunks, type EpochPlan } from '../shared/training/schedule.js';
import { sgdStep, updateRunning, type SgdState } from '../shared/training/sgd.js';
import type { Checkpoint, CheckpointStore, EpochProgress } from './checkpoint.js';
import type { Executor, StepTiming } from './executor.js';
import type { EpochMetrics } from './metrics.js';
import type { StepProgress } from './dashboard/run-monitor.js';
import type { TrainConfig } from '../shared/training/config.js';

export interface TrainerDeps {
  readonly executor: Executor;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Where checkpoints go; none means no checkpoints. */
  readonly store?: CheckpointStore;
  /** Aborting stops after the current step, with a checkpoint. */
  readonly signal?: AbortSignal;
  /** Told after every step (the dashboard and the status line follow it). */
  readonly onStep?: (p: StepProgress) => void;
}

export interface TrainerOptions {
  readonly trainCount: number;
  readonly validationCount: number;
  /** Checkpoint every this many steps as well as at every epoch end; 0 = epoch ends only. */
  readonly checkpointEvery: number;
  /** Validation images per unit of work. */
  readonly evalChunk: number;
}

export const TRAINER_DEFAULTS: Pick<TrainerOptions, 'checkpointEvery' | 'evalChunk'> = { checkpointEvery: 0, evalChunk: 250 };

export interface TrainResult {
  readonly completed: boolean;
  readonly state: ModelState;
  readonly history: readonly EpochMetrics[];
  readonly globalStep: number;
  readonly seconds: number;
}

const ZERO_PROGRESS: EpochProgress = { lossSum: 0, correct: 0, count: 0 };

export class Trainer {
  private readonly opts: TrainerOptions;
  private state: ModelState;
  private sgd: SgdState;
  private epoch: number;
  private stepInEpoch: number;
  private globalStep: number;
  private progress: EpochProgress;
  private history: EpochMetrics[];
  /** Where each batch-norm layer's running statistics live in the buffers. */
  private readonly batchNorm: ReturnType<typeof batchNormLayers>;

  constructor(readonly config: TrainConfig, private readonly deps: TrainerDeps, opts: Partial<TrainerOptions> & Pick<TrainerOptions, 'trainCount' | 'validationCount'>, resume?: Checkpoint) {
    this.opts = { ...TRAINER_DEFAULTS, ...opts };
    const model = modelSpec(config.model);
    this.batchNorm = batchNormLayers(model);
    this.state = resume ? cloneState(resume.state) : initialState(model, config.seed);
    this.sgd = { momentum: resume ? resume.momentum.map((m) => m.slice()) : [] };
    this.epoch = resume?.epoch ?? 0;
    this.stepInEpoch = resume?.stepInEpoch ?? 0;
    this.globalStep = resume?.globalStep ?? 0;
    this.progress = resume?.progress ?? ZERO_PROGRESS;
    this.history = resume ? [...resume.history] : [];
  }

  /** The weights at the current position (a copy). */
  currentState(): ModelState {
    return cloneState(this.state);
  }

  checkpoint(): Checkpoint {
    return {
      config: this.config,
      state: cloneState(this.state),
      momentum: this.sgd.momentum.map((m) => m.slice()),
      epoch: this.epoch,
      stepInEpoch: this.stepInEpoch,
      globalStep: this.globalStep,
      progress: this.progress,
      history: [...this.history],
    };
  }

  private async saveCheckpoint(): Promise<void> {
    if (!this.deps.store) return;
    const file = await this.deps.store.save(this.checkpoint());
    this.deps.logger.info({ event: 'checkpoint', file, globalStep: this.globalStep, epochsDone: this.epoch, stepInEpoch: this.stepInEpoch }, `checkpoint written: ${file}`);
  }

  private async step(plan: EpochPlan, log: Logger): Promise<StepTiming> {
    const { config, batchNorm } = this;
    const work = { epoch: this.epoch, globalStep: this.globalStep, microBatches: plan.microBatches(this.stepInEpoch), reduceGroup: config.reduceGroup ?? 0 };
    const { reduced, timing } = await this.deps.executor.gradients(work, { version: this.globalStep, state: this.state });
    sgdStep(this.state.params, reduced.grads, this.sgd, config);
    batchNorm.forEach((layer, i) => {
      const stats = reduced.batchStats[i]!;
      updateRunning(this.state.buffers[layer.meanIndex]!, stats.mean);
      updateRunning(this.state.buffers[layer.varIndex]!, stats.unbiasedVariance);
    });
    this.progress = {
      lossSum: this.progress.lossSum + reduced.lossSum,
      correct: this.progress.correct + reduced.correct,
      count: this.progress.count + reduced.count,
    };
    this.globalStep++;
    this.stepInEpoch++;
    log.debug({ step: this.globalStep, loss: reduced.lossSum / reduced.count }, 'step');
    return timing;
  }

  private async validate(): Promise<{ valLoss: number; valAccuracy: number }> {
    const chunks = validationChunks(this.opts.validationCount, this.opts.evalChunk);
    const results = await this.deps.executor.evaluate('validation', chunks, { version: this.globalStep, state: this.state });
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    for (const r of results) {
      lossSum += r.lossSum;
      correct += r.correct;
      count += r.count;
    }
    if (count !== this.opts.validationCount) throw new Error(`validation counted ${count} images, expected ${this.opts.validationCount}`);
    return { valLoss: lossSum / count, valAccuracy: correct / count };
  }

  async run(): Promise<TrainResult> {
    const { config, deps, opts } = this;
    const started = deps.clock.now();
    while (this.epoch < config.epochs) {
      const log = deps.logger.child({ epoch: this.epoch + 1 });
      const plan = planEpoch(opts.trainCount, config.batchSize, config.microBatch, config.seed, this.epoch);
      const epochStart = deps.clock.now();
      let compute = 0;
      let communication = 0;
      let waiting = 0;
      let trainedImages = 0;
      while (this.stepInEpoch < plan.stepsPerEpoch) {
        if (deps.signal?.aborted) {
          await this.saveCheckpoint();
          return this.result(false, started);
        }
        const stepStart = deps.clock.now();
        const before = this.progress;
        const timing = await this.step(plan, log);
        deps.onStep?.({
          epoch: this.epoch + 1, step: this.stepInEpoch, stepsPerEpoch: plan.stepsPerEpoch, globalStep: this.globalStep, images: config.batchSize,
          seconds: (deps.clock.now() - stepStart) / 1000, loss: (this.progress.lossSum - before.lossSum) / Math.max(1, this.progress.count - before.count),
        });
        compute += timing.computeMs;
        communication += timing.communicationMs;
        waiting += timing.waitingMs;
        trainedImages += config.batchSize;
        if (opts.checkpointEvery > 0 && this.globalStep % opts.checkpointEvery === 0 && this.stepInEpoch < plan.stepsPerEpoch) await this.saveCheckpoint();
      }
      const trainSeconds = (deps.clock.now() - epochStart) / 1000;
      const { valLoss, valAccuracy } = await this.validate();
      const metrics: EpochMetrics = {
        epoch: this.epoch + 1,
        steps: plan.stepsPerEpoch,
        trainLoss: this.progress.lossSum / this.progress.count,
        trainAccuracy: this.progress.correct / this.progress.count,
        valLoss,
        valAccuracy,
        imagesPerSec: trainSeconds > 0 ? trainedImages / trainSeconds : 0,
        workers: deps.executor.workerCount(),
        seconds: (deps.clock.now() - epochStart) / 1000,
        computeSeconds: compute / 1000,
        communicationSeconds: communication / 1000,
        waitingSeconds: waiting / 1000,
      };
      this.history.push(metrics);
      this.epoch++;
      this.stepInEpoch = 0;
      this.progress = ZERO_PROGRESS;
      deps.logger.info({ event: 'epoch', ...metrics },
        `epoch ${metrics.epoch}/${config.epochs}: train loss ${metrics.trainLoss.toFixed(4)} acc ${metrics.trainAccuracy.toFixed(4)}, val loss ${valLoss.toFixed(4)} acc ${valAccuracy.toFixed(4)}, ${metrics.imagesPerSec.toFixed(0)} img/s`);
      await this.saveCheckpoint();
    }
    const result = this.result(true, started);
    const last = this.history[this.history.length - 1];
    deps.logger.info({ event: 'done', valAccuracy: last?.valAccuracy, trainAccuracy: last?.trainAccuracy, epochs: config.epochs, seconds: result.seconds }, 'training complete');
    return result;
  }

  private result(completed: boolean, started: number): TrainResult {
    return { completed, state: cloneState(this.state), history: [...this.history], globalStep: this.globalStep, seconds: (this.deps.clock.now() - started) / 1000 };
  }
}
