// The training loop, shared by the in-process trainer and the distributed coordinator:
// plan the step, get micro-batch gradients from the executor, reduce them in order,
// step SGD, update batch-norm statistics, validate and checkpoint every epoch. A step whose
// update would make the weights non-finite is not applied (ERR_DIVERGED); when the executor
// reports a worker proven wrong, the trainer rolls back to an in-memory snapshot from before
// that worker's first unverified contribution and replays (issue 12).
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { batchNormLayers, cloneState, initialState, modelSpec, type ModelState } from '../shared/models/spec.js';
import { planEpoch, validationChunks, type EpochPlan } from '../shared/training/schedule.js';
import { sgdStep, updateRunning, type SgdState } from '../shared/training/sgd.js';
import { sumTallies } from '../shared/training/reduce.js';
import { allFinite } from '../shared/tensor-codec.js';
import type { Checkpoint, CheckpointStore, EpochProgress } from './checkpoint.js';
import type { Executor, StepTiming } from './executor.js';
import type { EpochMetrics } from './metrics.js';
import type { StepProgress } from './dashboard/run-monitor.js';
import { Snapshots } from './snapshots.js';
import { NO_COUNTS, type VerificationCounters } from './verifier.js';
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
  private readonly model: ReturnType<typeof modelSpec>;
  /** States to roll back to, kept only when the executor verifies results (it may ask for a rollback). */
  private readonly snapshots: Snapshots | undefined;
  /** Steps undone by rollbacks, to be computed again. */
  private replayedSteps = 0;

  constructor(readonly config: TrainConfig, private readonly deps: TrainerDeps, opts: Partial<TrainerOptions> & Pick<TrainerOptions, 'trainCount' | 'validationCount'>, resume?: Checkpoint) {
    this.opts = { ...TRAINER_DEFAULTS, ...opts };
    const model = modelSpec(config.model);
    this.model = model;
    this.batchNorm = batchNormLayers(model);
    this.state = resume ? cloneState(resume.state) : initialState(model, config.seed);
    this.sgd = { momentum: resume ? resume.momentum.map((m) => m.slice()) : [] };
    this.epoch = resume?.epoch ?? 0;
    this.stepInEpoch = resume?.stepInEpoch ?? 0;
    this.globalStep = resume?.globalStep ?? 0;
    this.progress = resume?.progress ?? ZERO_PROGRESS;
    this.history = resume ? [...resume.history] : [];
    this.snapshots = deps.executor.rollsBack?.() ? new Snapshots() : undefined;
  }

  /** The weights at the current position (a copy). */
  currentState(): ModelState {
    return cloneState(this.state);
  }

  /** What a checkpoint file holds now (sharing the position's arrays, which no step writes: see position()). */
  checkpoint(): Checkpoint {
    return { ...this.position(), quarantined: this.deps.executor.quarantined?.() ?? [] };
  }

  /**
   * The current position without copying its tensors: a step never writes the arrays it
   * started from (the update is made on copies that replace them), so they stay as they are.
   */
  private position(): Checkpoint {
    return {
      config: this.config,
      state: this.state,
      momentum: this.sgd.momentum,
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

  /** One step; undefined when the executor asked for a rollback instead (done here). */
  private async step(plan: EpochPlan, log: Logger): Promise<StepTiming | undefined> {
    const { config, batchNorm } = this;
    const work = { epoch: this.epoch, globalStep: this.globalStep, microBatches: plan.microBatches(this.stepInEpoch), reduceGroup: config.reduceGroup ?? 0 };
    const { reduced, timing } = await this.deps.executor.gradients(work, { version: this.globalStep, state: this.state });
    if (this.rollBackIfAsked()) return undefined;
    // The update is computed on copies and applied only if everything stays finite.
    const notFinite = (names: readonly string[], tensors: readonly Float32Array[]): string[] => names.filter((_, k) => !allFinite(tensors[k]!));
    const paramNames = this.model.params.map((p) => p.name);
    const badSum = notFinite(paramNames, reduced.grads);
    if (badSum.length > 0 || !Number.isFinite(reduced.lossSum)) this.diverged(`the step's summed gradient is not finite (${[...badSum, ...(Number.isFinite(reduced.lossSum) ? [] : ['loss'])].join(', ')})`);
    const params = this.state.params.map((p) => p.slice());
    const buffers = this.state.buffers.map((b) => b.slice());
    const sgd: SgdState = { momentum: this.sgd.momentum.map((m) => m.slice()) };
    sgdStep(params, reduced.grads, sgd, config);
    batchNorm.forEach((layer, i) => {
      const stats = reduced.batchStats[i]!;
      updateRunning(buffers[layer.meanIndex]!, stats.mean);
      updateRunning(buffers[layer.varIndex]!, stats.unbiasedVariance);
    });
    const bad = [...notFinite(paramNames, params), ...notFinite(this.model.buffers.map((b) => b.name), buffers)];
    if (bad.length > 0) this.diverged(`the SGD update makes ${bad.join(', ')} non-finite`);
    this.state = { params, buffers };
    this.sgd = sgd;
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

  private diverged(what: string): never {
    const step = this.globalStep;
    this.deps.logger.error({ event: 'diverged', globalStep: step, epoch: this.epoch + 1, stepInEpoch: this.stepInEpoch, what }, `training diverged at step ${step}: ${what}`);
    throw new FlockError(ErrorCode.DIVERGED, `training diverged at step ${step} (epoch ${this.epoch + 1}, step ${this.stepInEpoch} of the epoch): ${what}; ` +
      `the step was not applied, the weights of step ${step} are kept and the newest checkpoint is intact; lower --lr (or raise --weight-decay) and start again`);
  }

  /** Rolls back when the executor asks (a worker was quarantined); returns whether it did. */
  private rollBackIfAsked(): boolean {
    const asked = this.deps.executor.takeRollback?.();
    if (!asked) return false;
    const snap = this.snapshots?.atOrBefore(asked.step);
    if (!snap) throw new FlockError(ErrorCode.UNSUPPORTED, `cannot roll back to step ${asked.step} (${asked.reason}): no state that old is kept in memory`);
    const from = this.globalStep;
    this.restore(snap);
    this.snapshots?.dropAfter(snap.globalStep);
    this.replayedSteps += from - snap.globalStep;
    this.deps.executor.rewound?.(snap.globalStep);
    this.deps.logger.warn({ event: 'rollback', fromStep: from, toStep: snap.globalStep, requestedStep: asked.step, reason: asked.reason, replayedSteps: this.replayedSteps },
      `rolling back from step ${from} to step ${snap.globalStep} and replaying without the quarantined worker (${asked.reason})`);
    return true;
  }

  private restore(c: Checkpoint): void {
    this.state = cloneState(c.state);
    this.sgd = { momentum: c.momentum.map((m) => m.slice()) };
    this.epoch = c.epoch;
    this.stepInEpoch = c.stepInEpoch;
    this.globalStep = c.globalStep;
    this.progress = c.progress;
    this.history = [...c.history];
  }

  /** Verification counts so far (the executor's, plus the steps replayed here). */
  verification(): VerificationCounters {
    return { ...(this.deps.executor.verificationCounters?.() ?? NO_COUNTS), replayedSteps: this.replayedSteps };
  }

  private async validate(): Promise<{ valLoss: number; valAccuracy: number } | undefined> {
    const chunks = validationChunks(this.opts.validationCount, this.opts.evalChunk);
    const results = await this.deps.executor.evaluate('validation', chunks, { version: this.globalStep, state: this.state });
    if (this.rollBackIfAsked()) return undefined;
    const { lossSum, correct, count } = sumTallies(results);
    if (count !== this.opts.validationCount) throw new Error(`validation counted ${count} images, expected ${this.opts.validationCount}`);
    return { valLoss: lossSum / count, valAccuracy: correct / count };
  }

  async run(): Promise<TrainResult> {
    const { config, deps, opts } = this;
    const started = deps.clock.now();
    epochs: while (this.epoch < config.epochs) {
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
        this.snapshots?.save(this.position());
        const timing = await this.step(plan, log);
        if (!timing) continue epochs;
        deps.onStep?.({
          epoch: this.epoch + 1, step: this.stepInEpoch, stepsPerEpoch: plan.stepsPerEpoch, globalStep: this.globalStep, images: config.batchSize,
          seconds: (deps.clock.now() - stepStart) / 1000, loss: (this.progress.lossSum - before.lossSum) / Math.max(1, this.progress.count - before.count),
          verification: this.verification(),
        });
        compute += timing.computeMs;
        communication += timing.communicationMs;
        waiting += timing.waitingMs;
        trainedImages += config.batchSize;
        if (opts.checkpointEvery > 0 && this.globalStep % opts.checkpointEvery === 0 && this.stepInEpoch < plan.stepsPerEpoch) await this.saveCheckpoint();
      }
      const trainSeconds = (deps.clock.now() - epochStart) / 1000;
      const validated = await this.validate();
      if (!validated) continue epochs;
      const { valLoss, valAccuracy } = validated;
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
      deps.logger.info({ event: 'epoch', ...metrics, verification: this.verification() },
        `epoch ${metrics.epoch}/${config.epochs}: train loss ${metrics.trainLoss.toFixed(4)} acc ${metrics.trainAccuracy.toFixed(4)}, val loss ${valLoss.toFixed(4)} acc ${valAccuracy.toFixed(4)}, ${metrics.imagesPerSec.toFixed(0)} img/s`);
      await this.saveCheckpoint();
    }
    const result = this.result(true, started);
    const last = this.history[this.history.length - 1];
    deps.logger.info({ event: 'done', valAccuracy: last?.valAccuracy, trainAccuracy: last?.trainAccuracy, epochs: config.epochs, seconds: result.seconds, verification: this.verification() }, 'training complete');
    return result;
  }

  private result(completed: boolean, started: number): TrainResult {
    return { completed, state: cloneState(this.state), history: [...this.history], globalStep: this.globalStep, seconds: (this.deps.clock.now() - started) / 1000 };
  }
}
