// Scheduling of one open round at a time (a training step or an evaluation): its units are
// spread round-robin over ready workers, results are accepted only from the worker that
// holds the unit, a worker that makes no progress within a deadline derived from the
// fleet's measured pace is dropped, and a departed worker's units go back to the others:
// to workers that have returned results when there are any (so a token holder whose
// connections stall cannot draw the same units again and again), and at most --max-attempts
// times each. Results come back in unit-id order. With a verifier (issue 12) every round's
// results are checked before they are returned: some units are computed again, by another
// worker (a round that excludes the first one) or by the coordinator's arbiter.
import type { Dataset } from '../shared/data/cifar.js';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { cloneState, type ModelSpec, type ModelState } from '../shared/models/spec.js';
import {
  CloseCode, MessageType, encode, indicesToBytes, stateToWire, type EvaluationMessage, type GradientMessage, type WireState,
} from '../shared/protocol.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import type { Split, StepTiming, StepWork, VersionedState } from './executor.js';
import { violation } from './pool-connections.js';
import { ResultPace, type PaceOptions } from './result-pace.js';
import { checkEvaluation, checkGradient } from './result-check.js';
import type { Arbiter } from './arbiter.js';
import type { Evidence } from './quarantine.js';
import { COORDINATOR_ID, type Computed, type Participant, type RecomputeContext, type Verifier } from './verifier.js';
import type { WorkerConn } from './worker-conn.js';
import { WorkRound, poolClosed } from './work-round.js';

type OpenRound =
  | { readonly kind: 'gradients'; readonly round: WorkRound<GradientResult>; readonly work: StepWork; readonly weightsVersion: number }
  | { readonly kind: 'evaluate'; readonly round: WorkRound<EvalResult>; readonly split: Split; readonly weightsVersion: number };

export interface SchedulerDeps {
  readonly clock: Clock;
  readonly model: ModelSpec;
  readonly train: Dataset;
  readonly validation: Dataset;
  /** Ready workers, by id. */
  readonly ready: () => WorkerConn[];
  readonly all: () => WorkerConn[];
  readonly drop: (conn: WorkerConn, reason: string, closeCode?: number) => void;
  readonly stopping: () => boolean;
  /** Called whenever whether the round lacks workers may have changed. */
  readonly waitingChanged: () => void;
  /** Checks results before they are used; none: results are taken as they come. */
  readonly verify?: { readonly verifier: Verifier; readonly arbiter: Arbiter; readonly convict: (e: Evidence) => boolean };
}

export interface SchedulerOptions extends PaceOptions {
  readonly minWorkers: number;
  readonly maxAttempts: number;
}

export class Scheduler {
  private open: OpenRound | undefined;
  private nextRequest = 1;
  private weights: { version: number; wire: WireState; frame: Uint8Array; state: ModelState } | undefined;
  private readonly pace: ResultPace;
  /** Who returned results, by connection id (names outlive connections, for the evidence). */
  private readonly participants = new Map<number, Participant>();
  private dispatching = false;
  private dispatchAgain = false;

  constructor(private readonly opts: SchedulerOptions, private readonly deps: SchedulerDeps) {
    this.pace = new ResultPace(opts);
  }

  /** The weights the last round was sent, for a worker that joins now. */
  currentWeights(): { version: number; wire: WireState } | undefined {
    return this.weights;
  }

  /** Whether a round has units that no worker holds (it waits for workers). */
  blocked(): boolean {
    return this.open !== undefined && this.open.round.unassigned().length > 0;
  }

  async gradients(work: StepWork, weights: VersionedState): Promise<{ results: GradientResult[]; timing: StepTiming }> {
    const start = this.deps.clock.now();
    this.load(weights);
    const { computed, computeMs, waitingMs } = await this.collect<GradientResult>({ kind: 'gradients', round: new WorkRound(work.globalStep, work.microBatches), work, weightsVersion: weights.version });
    const verify = this.deps.verify;
    const results = verify
      ? await verify.verifier.gradients(work.globalStep, work.microBatches, computed, this.recompute<GradientResult>(
        (units, exclude) => ({ kind: 'gradients', round: new WorkRound(work.globalStep, units, exclude), work, weightsVersion: weights.version }),
        (unit) => verify.arbiter.gradient(this.weights!.state, this.weights!, work.globalStep, unit)))
      : computed.map((c) => c.result);
    const now = this.deps.clock.now();
    return { results, timing: { computeMs, waitingMs, communicationMs: Math.max(0, now - start - computeMs - waitingMs) } };
  }

  async evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]> {
    this.load(weights);
    const requestId = this.nextRequest++;
    const { computed } = await this.collect<EvalResult>({ kind: 'evaluate', round: new WorkRound(requestId, chunks), split, weightsVersion: weights.version });
    const verify = this.deps.verify;
    if (!verify) return computed.map((c) => c.result);
    return verify.verifier.evaluations(requestId, weights.version, chunks, computed, this.recompute<EvalResult>(
      (units, exclude) => ({ kind: 'evaluate', round: new WorkRound(this.nextRequest++, units, exclude), split, weightsVersion: weights.version }),
      (unit) => verify.arbiter.evaluate(this.weights!.state, this.weights!, split, unit)));
  }

  /** The weights changed under the same version numbers (the trainer rolled back): send them again. */
  forgetWeights(): void {
    this.weights = undefined;
    for (const c of this.deps.all()) c.weightsVersion = -1;
  }

  /** Runs one round to the end; results in unit order with who computed each. */
  private async collect<R>(open: OpenRound): Promise<{ computed: Computed<R>[]; computeMs: number; waitingMs: number }> {
    const round = open.round as WorkRound<unknown> as WorkRound<R>;
    this.begin(open);
    try {
      const results = await round.finished;
      const ids = round.ids();
      const computed = results.map((result, k) => ({ result, by: this.participant(round.workerOf(ids[k]!)!) }));
      return { computed, computeMs: round.maxComputeMs(), waitingMs: round.waitingMs(this.deps.clock.now()) };
    } finally {
      this.end(round);
    }
  }

  private participant(id: number): Participant {
    if (id === COORDINATOR_ID) return { id, name: 'coordinator', backend: this.deps.verify!.arbiter.backend };
    return this.participants.get(id)!;
  }

  private recompute<R>(round: (units: readonly MicroBatch[], exclude: ReadonlyMap<number, ReadonlySet<number>>) => OpenRound, local: (unit: MicroBatch) => Promise<R>): RecomputeContext<R> {
    return {
      byOthers: async (units, exclude) => (await this.collect<R>(round(units, exclude))).computed,
      byCoordinator: async (unit) => ({ result: await local(unit), by: this.participant(COORDINATOR_ID) }),
      convict: (e) => this.deps.verify!.convict(e),
    };
  }

  /** Takes back a departing worker's units (the next dispatch hands them out again). */
  release(conn: WorkerConn): number[] {
    return this.open ? this.open.round.release(conn.id) : [];
  }

  /** Fails the open round, if any (the pool is closing). */
  fail(err: unknown): void {
    this.open?.round.fail(err);
  }

  onGradient(conn: WorkerConn, msg: GradientMessage): void {
    const open = this.open;
    if (open?.kind !== 'gradients' || open.round.key !== msg.step) throw violation(`gradient for step ${msg.step}, which is not the open step`);
    const unit = this.owned(conn, open.round, msg.microBatch, 'micro-batch');
    const result = checkGradient(msg, this.deps.model, unit.indices.length, !this.deps.verify);
    this.accepted(conn, open.round, unit.id, result, msg.computeMs);
  }

  onEvaluation(conn: WorkerConn, msg: EvaluationMessage): void {
    const open = this.open;
    if (open?.kind !== 'evaluate' || open.round.key !== msg.requestId) throw violation(`evaluation for request ${msg.requestId}, which is not open`);
    const unit = this.owned(conn, open.round, msg.chunk, 'chunk');
    this.accepted(conn, open.round, unit.id, checkEvaluation(msg, unit.indices.length, !this.deps.verify), msg.computeMs);
  }

  /**
   * Hands every unassigned unit of the open round to a ready worker, round-robin by position.
   * Re-entrant calls (a send that drops a worker, whose units come back) run after this one
   * instead of inside it, so no unit is ever handed out twice.
   */
  dispatch(): void {
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    this.dispatching = true;
    try {
      do {
        this.dispatchAgain = false;
        this.dispatchOnce();
      } while (this.dispatchAgain);
    } finally {
      this.dispatching = false;
    }
  }

  private dispatchOnce(): void {
    const open = this.open;
    if (!open || this.deps.stopping()) return;
    const units = open.round.unassigned();
    const now = this.deps.clock.now();
    if (units.length === 0) {
      open.round.setWaiting(false, now);
      this.deps.waitingChanged();
      return;
    }
    const workers = this.deps.ready();
    if (workers.length < this.opts.minWorkers || workers.length === 0) {
      open.round.setWaiting(true, now);
      this.deps.waitingChanged();
      return;
    }
    const spent = units.find((u) => open.round.attemptsOf(u.id) >= this.opts.maxAttempts);
    if (spent) {
      const what = open.kind === 'gradients' ? `micro-batch ${spent.id} of step ${open.round.key}` : `evaluation chunk ${spent.id}`;
      open.round.fail(new FlockError(ErrorCode.TIMEOUT,
        `${what} was handed out ${this.opts.maxAttempts} times and no worker returned it (each left, stalled or sent something invalid); ` +
        'check the workers\' logs, or raise --max-attempts'));
      return;
    }
    open.round.setWaiting(false, now);
    this.deps.waitingChanged();
    // Units tried before go only to workers that have returned results, when there are any.
    const proven = workers.filter((w) => w.results > 0);
    const retries = units.filter((u) => open.round.attemptsOf(u.id) > 0 && proven.length > 0);
    const fresh = units.filter((u) => !retries.includes(u));
    const shares = new Map<WorkerConn, MicroBatch[]>();
    const spread = (list: readonly MicroBatch[], to: readonly WorkerConn[]): void => list.forEach((u, k) => {
      const eligible = to.filter((w) => open.round.eligible(u.id, w.id));
      const fallback = workers.filter((w) => open.round.eligible(u.id, w.id));
      const from = eligible.length > 0 ? eligible : fallback;
      const w = from[k % Math.max(1, from.length)];
      // No ready worker may compute it (a second computation, and the first one's worker is
      // all there is): the coordinator computes it itself.
      if (!w) return this.computeHere(open, u);
      shares.set(w, [...(shares.get(w) ?? []), u]);
    });
    spread(fresh, workers);
    spread(retries, proven);
    for (const [conn, share] of shares) this.sendWork(conn, open, share.sort((a, b) => a.id - b.id));
  }

  /** The coordinator's arbiter computes a unit of the open round. */
  private computeHere(open: OpenRound, unit: MicroBatch): void {
    const verify = this.deps.verify;
    if (!verify) return;
    open.round.assign(unit.id, COORDINATOR_ID);
    const weights = this.weights!;
    const started = this.deps.clock.now();
    const result: Promise<GradientResult | EvalResult> = open.kind === 'gradients'
      ? verify.arbiter.gradient(weights.state, weights, open.work.globalStep, unit)
      : verify.arbiter.evaluate(weights.state, weights, open.split, unit);
    result.then(
      (r) => (open.round as WorkRound<unknown>).complete(unit.id, COORDINATOR_ID, r, this.deps.clock.now() - started),
      (err: unknown) => open.round.fail(err),
    );
  }

  /** Makes `weights` the ones rounds are computed at (encoded once per version). */
  private load(weights: VersionedState): void {
    if (this.deps.stopping()) throw poolClosed();
    if (this.weights?.version !== weights.version) {
      // A copy: the trainer updates its state in place after the step.
      const state = cloneState(weights.state);
      const wire = stateToWire(state);
      this.weights = { version: weights.version, wire, state, frame: encode({ type: MessageType.WEIGHTS, version: weights.version, ...wire }) };
    }
  }

  private begin(open: OpenRound): void {
    if (this.deps.stopping()) throw poolClosed();
    if (this.open) throw new FlockError(ErrorCode.UNSUPPORTED, 'the worker pool runs one step or evaluation at a time');
    this.open = open;
    this.dispatch();
  }

  private end(round: object): void {
    if (this.open?.round !== round) return;
    this.open = undefined;
    for (const c of this.deps.all()) {
      c.outstanding.clear();
      this.watch(c, undefined);
    }
    this.deps.waitingChanged();
  }

  private sendWork(conn: WorkerConn, open: OpenRound, units: MicroBatch[]): void {
    const weights = this.weights!;
    if (conn.state !== 'ready') return;
    if (conn.weightsVersion !== weights.version) {
      conn.send(weights.frame, (err) => this.deps.drop(conn, `send failed: ${err.message}`));
      conn.weightsVersion = weights.version;
      // A send that failed at once dropped the worker: its share stays unassigned for the next pass.
      if (conn.state !== 'ready') return;
    }
    const wireUnits = units.map((u) => ({ id: u.id, indices: indicesToBytes(u.indices) }));
    const lists = units.map((u) => u.indices);
    const split = open.kind === 'gradients' ? 'train' : open.split;
    const samples = conn.samples![split].take(this.data(split), lists);
    const frame = open.kind === 'gradients'
      ? encode({ type: MessageType.ASSIGN, epoch: open.work.epoch, step: open.work.globalStep, weightsVersion: weights.version, microBatches: wireUnits, samples })
      : encode({ type: MessageType.EVALUATE, requestId: open.round.key, weightsVersion: weights.version, split: open.split, chunks: wireUnits, samples });
    for (const u of units) {
      open.round.assign(u.id, conn.id);
      conn.outstanding.add(u.id);
    }
    conn.log.debug({
      event: 'assigned', kind: open.kind, key: open.round.key, units: units.map((u) => u.id),
      attempts: units.map((u) => open.round.attemptsOf(u.id)), imagesSent: samples.labels.byteLength,
    }, 'work assigned');
    if (conn.outstanding.size === units.length) conn.lastProgress = this.deps.clock.now();
    this.watch(conn, open.kind);
    conn.send(frame, (err) => this.deps.drop(conn, `send failed: ${err.message}`));
  }

  private data(split: Split): Dataset {
    return split === 'train' ? this.deps.train : this.deps.validation;
  }

  private watch(conn: WorkerConn, kind: OpenRound['kind'] | undefined): void {
    const deadline = kind === undefined ? this.opts.stepTimeoutMs : this.pace.deadline(kind);
    conn.watchProgress(deadline, () => {
      const ids = [...conn.outstanding].sort((a, b) => a - b);
      const why = deadline < this.opts.stepTimeoutMs ? ` (${this.opts.deadlineFactor}x the fleet's recent median of ${Math.round(this.pace.median(kind!) ?? 0)} ms, at least ${this.opts.stepTimeoutFloorMs})` : '';
      this.deps.drop(conn, `returned no result for [${ids.join(', ')}] within ${deadline} ms${why}`, CloseCode.TIMEOUT);
    });
  }

  /** The unit `id` if it is outstanding at `conn`; a violation otherwise. */
  private owned<R>(conn: WorkerConn, round: WorkRound<R>, id: number, what: string): MicroBatch {
    const unit = round.unit(id);
    if (!unit || round.ownerOf(id) !== conn.id) throw violation(`${what} ${id} is not outstanding at this worker`);
    return unit;
  }

  private accepted<R>(conn: WorkerConn, round: WorkRound<R>, id: number, result: R, computeMs: number): void {
    const kind = this.open!.kind;
    const now = this.deps.clock.now();
    this.pace.record(kind, now - conn.lastProgress);
    conn.lastProgress = now;
    conn.results++;
    conn.outstanding.delete(id);
    if (!this.participants.has(conn.id)) this.participants.set(conn.id, { id: conn.id, name: conn.name, backend: conn.backend });
    this.watch(conn, kind);
    round.complete(id, conn.id, result, computeMs);
  }
}
