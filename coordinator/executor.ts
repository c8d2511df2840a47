// Where gradients get computed: in this process (LocalExecutor) or on remote workers
// (the coordinator's WorkerPool). The training loop only sees this interface.
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import type { ModelState } from '../shared/models/spec.js';
import type { GroupSum, StepResult } from '../shared/training/reduce.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import type { Evidence } from './quarantine.js';
import type { VerificationCounters } from './verifier.js';

export type Split = 'train' | 'validation';

/** Weights tagged with the global step they are valid for. */
export interface VersionedState {
  readonly version: number;
  readonly state: ModelState;
}

export interface StepWork {
  readonly epoch: number;
  readonly globalStep: number;
  readonly microBatches: readonly MicroBatch[];
  /** The config's reduceGroup: the canonical reduction tree (see StepSum); default 0. */
  readonly reduceGroup?: number;
}

/** Where a step's wall time went, in milliseconds. */
export interface StepTiming {
  /** Gradient computation (the slowest worker's, for distributed steps). */
  readonly computeMs: number;
  /** Encoding, sending and receiving weights, data and gradients. */
  readonly communicationMs: number;
  /** Idle time waiting for workers (stragglers, too few workers). */
  readonly waitingMs: number;
}

export interface GradientsOutcome {
  /**
   * Each micro-batch's result, ordered by micro-batch id; the pool reuses their arrays in its next
   * gradients() call. Micro-batches summed by a relay come without gradients (`grads` empty):
   * only their group's sum exists (`groups`).
   */
  readonly results: GradientResult[];
  /** The step's reduction of `results` (reduceStep's, bit for bit; the pool sums while results arrive). */
  readonly reduced: StepResult;
  /** Each reduce group's sum before the division by the count (the pool gives them; a relay sends them upstream). */
  readonly groups?: readonly GroupSum[];
  readonly timing: StepTiming;
}

export interface Executor {
  /** Number of compute participants right now (for logs). */
  workerCount(): number;
  /** Gradients of every micro-batch computed at `weights`, ordered by micro-batch id. */
  gradients(work: StepWork, weights: VersionedState): Promise<GradientsOutcome>;
  /** Evaluation-mode loss/accuracy of each chunk of `split` at `weights`, ordered by chunk id. */
  evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]>;
  /**
   * After gradients() or evaluate(): a step the trainer must go back to (a worker was proven
   * wrong and its unverified contributions start there); cleared by reading.
   */
  takeRollback?(): { step: number; reason: string } | undefined;
  /** Whether takeRollback can ever ask (results are verified): the trainer then keeps states to go back to. */
  rollsBack?(): boolean;
  /** The trainer went back to `step` (the same weights versions now hold other weights). */
  rewound?(step: number): void;
  /** Workers quarantined so far (kept in checkpoints, so that a resumed run refuses them too). */
  quarantined?(): readonly Evidence[];
  /** Counts of the verification of results, when the executor verifies. */
  verificationCounters?(): VerificationCounters;
}
