// Scheduling of one open round at a time (a training step or an evaluation): its units are
// spread round-robin over ready workers, results are accepted only from the worker that
// holds the unit, a worker that makes no progress within a deadline derived from the
// fleet's measured pace is dropped, and a departed worker's units go back to the others:
// to workers that have returned results when there are any (so a token holder whose
// connections stall cannot draw the same units again and again), and at most --max-attempts
// times each. Results come back in unit-id order. With relays in the fleet, training steps
// are dealt as whole reduce groups (dispatchGroups) and a relay answers each with one sum.
import type { Dataset } from '../shared/data/cifar.js';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { cloneState, type ModelSpec } from '../shared/models/spec.js';
import {
  CloseCode, MessageType, encode, encodeWeights, encodeWithWeights, indicesToBytes, stateToWire, type EncodedWeights, type EvaluationMessage, type GradientMessage, type GroupSumMessage, type WireState,
} from '../shared/protocol.js';
import type { WirePrecision } from '../shared/training/config.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { NotFiniteError, StepSum, reduceGroupOf } from '../shared/training/reduce.js';
import type { GradientsOutcome, Split, StepWork, VersionedState } from './executor.js';
import { violation } from './pool-connections.js';
import { ResultPace, type PaceOptions } from './result-pace.js';
import { checkEvaluation, checkGradient, checkGroupSum, notFinite } from './result-check.js';
import type { WorkerConn } from './worker-conn.js';
import { WorkRound, poolClosed } from './work-round.js';

type OpenRound =
  | { readonly kind: 'gradients'; readonly round: WorkRound<GradientResult>; readonly work: StepWork; readonly weightsVersion: number; readonly sum: StepSum }
  | { readonly kind: 'evaluate'; readonly round: WorkRound<EvalResult>; readonly split: Split; readonly weightsVersion: number };

export interface SchedulerDeps {
  readonly clock: Clock;
  readonly model: ModelSpec;
  /** The run's --wire-precision: float16 gradients are refused in a float32 run. */
  readonly wirePrecision: WirePrecision;
  readonly train: Dataset;
  readonly validation: Dataset;
  /** Ready workers, by id. */
  readonly ready: () => WorkerConn[];
  readonly all: () => WorkerConn[];
  readonly drop: (conn: WorkerConn, reason: string, closeCode?: number) => void;
  readonly stopping: () => boolean;
  /** Called whenever whether the round lacks workers may have changed. */
  readonly waitingChanged: () => void;
}

export interface SchedulerOptions extends PaceOptions {
  readonly minWorkers: number;
  readonly maxAttempts: number;
}

export class Scheduler {
  private open: OpenRound | undefined;
  private nextRequest = 1;
  private weights: { version: number; wire: WireState; encoded: EncodedWeights } | undefined;
  private readonly pace: ResultPace;
  /**
   * Buffers gradients are decoded into, reused from step to step: `lent` hold the results
   * of the last gradients() call (valid until the next call), `free` wait for the next step.
   */
  private readonly gradientBuffers: { free: Float32Array[]; lent: Float32Array[] } = { free: [], lent: [] };

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

  async gradients(work: StepWork, weights: VersionedState): Promise<GradientsOutcome> {
    const start = this.deps.clock.now();
    const buffers = this.gradientBuffers;
    buffers.free.push(...buffers.lent.splice(0));
    const round = new WorkRound<GradientResult>(work.globalStep, work.microBatches);
    // Summed as results arrive, in micro-batch id order whatever the arrival order.
    const sum = new StepSum(work.microBatches.map((u) => u.id).sort((a, b) => a - b), this.deps.model.params.map((p) => p.size), true, work.reduceGroup ?? 0);
    this.begin({ kind: 'gradients', round, work, weightsVersion: weights.version, sum }, weights);
    try {
      const results = await round.finished;
      const groups = sum.groupSums();
      const reduced = sum.finish();
      const now = this.deps.clock.now();
      const computeMs = round.maxComputeMs();
      const waitingMs = round.waitingMs(now);
      return { results, reduced, groups, timing: { computeMs, waitingMs, communicationMs: Math.max(0, now - start - computeMs - waitingMs) } };
    } finally {
      this.end(round);
    }
  }

  async evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]> {
    const round = new WorkRound<EvalResult>(this.nextRequest++, chunks);
    this.begin({ kind: 'evaluate', round, split, weightsVersion: weights.version }, weights);
    try {
      return await round.finished;
    } finally {
      this.end(round);
    }
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
    const buffers = this.gradientBuffers;
    const into = buffers.free.pop() ?? new Float32Array(this.deps.model.parameterCount);
    try {
      open.sum.add(unit.id, checkGradient(msg, this.deps.model, unit.indices.length, into, this.deps.wirePrecision));
    } catch (err) {
      buffers.free.push(into);
      throw err instanceof NotFiniteError ? notFinite(this.deps.model, msg.microBatch, err.tensor) : err;
    }
    buffers.lent.push(into);
    const result = open.sum.result(unit.id)!;
    this.accepted(conn, open.round, [[unit.id, result]], msg.computeMs);
  }

  /** A relay's sum of one whole reduce group it holds: checked like gradients, added at once. */
  onGroupSum(conn: WorkerConn, msg: GroupSumMessage): void {
    const open = this.open;
    if (!conn.relay) throw violation('group sum from a connection that is not a relay');
    if (open?.kind !== 'gradients' || open.round.key !== msg.step) throw violation(`group sum for step ${msg.step}, which is not the open step`);
    const group = open.sum.groupIds().find((g) => g.group === msg.group);
    if (!group) throw violation(`group ${msg.group} is not part of step ${msg.step}`);
    const ids = msg.parts.map((p) => p.microBatch);
    if (ids.length !== group.ids.length || ids.some((id, i) => id !== group.ids[i])) throw violation(`group sum of group ${msg.group} covers [${ids.join(', ')}], not [${group.ids.join(', ')}]`);
    const units = group.ids.map((id) => this.owned(conn, open.round, id, 'micro-batch'));
    const buffers = this.gradientBuffers;
    const into = buffers.free.pop() ?? new Float32Array(this.deps.model.parameterCount);
    try {
      const { sums, parts } = checkGroupSum(msg, this.deps.model, units.map((u) => u.indices.length), into);
      open.sum.addGroup(msg.group, sums, parts);
      buffers.lent.push(into);
      this.accepted(conn, open.round, units.map((u) => [u.id, parts.get(u.id)!] as const), msg.computeMs);
    } catch (err) {
      if (!buffers.lent.includes(into)) buffers.free.push(into);
      throw err instanceof NotFiniteError ? notFinite(this.deps.model, err.unit, err.tensor) : err;
    }
  }

  onEvaluation(conn: WorkerConn, msg: EvaluationMessage): void {
    const open = this.open;
    if (open?.kind !== 'evaluate' || open.round.key !== msg.requestId) throw violation(`evaluation for request ${msg.requestId}, which is not open`);
    const unit = this.owned(conn, open.round, msg.chunk, 'chunk');
    this.accepted(conn, open.round, [[unit.id, checkEvaluation(msg, unit.indices.length)]], msg.computeMs);
  }

  /** Hands every unassigned unit of the open round to a ready worker, round-robin by position. */
  dispatch(): void {
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
      const w = to[k % to.length]!;
      const share = shares.get(w);
      if (share) share.push(u);
      else shares.set(w, [u]);
    });
    const relays = workers.filter((w) => w.relay);
    if (open.kind === 'gradients' && relays.length > 0) return this.dispatchGroups(open, units, workers, proven);
    spread(fresh, workers);
    spread(retries, proven);
    for (const [conn, share] of shares) this.sendWork(conn, open, share.sort((a, b) => a.id - b.id));
  }

  /**
   * With relays in the fleet: whole unassigned reduce groups are dealt round-robin over every
   * ready connection (a relay gets each as one grouped assignment and answers with its sum; a
   * worker gets its micro-batches), retried groups only to connections that returned results.
   * What is left of partly assigned groups goes micro-batch by micro-batch to workers, or, with
   * none, to relays as plain micro-batches (they pass each gradient through).
   */
  private dispatchGroups(open: Extract<OpenRound, { kind: 'gradients' }>, units: readonly MicroBatch[], workers: readonly WorkerConn[], proven: readonly WorkerConn[]): void {
    const groupSize = open.work.reduceGroup ?? 0;
    const free = new Set(units.map((u) => u.id));
    const whole = open.sum.groupIds().filter((g) => g.ids.every((id) => free.has(id)));
    const inWhole = new Set(whole.flatMap((g) => g.ids));
    const grouped = new Map<WorkerConn, MicroBatch[]>();
    const plain = new Map<WorkerConn, MicroBatch[]>();
    const give = (to: Map<WorkerConn, MicroBatch[]>, conn: WorkerConn, list: readonly MicroBatch[]): void => {
      const share = to.get(conn);
      if (share) share.push(...list);
      else to.set(conn, [...list]);
    };
    const retried = (ids: readonly number[]): boolean => ids.some((id) => open.round.attemptsOf(id) > 0);
    let next = 0;
    let nextProven = 0;
    for (const g of whole) {
      const list = g.ids.map((id) => open.round.unit(id)!);
      const conn = retried(g.ids) && proven.length > 0 ? proven[nextProven++ % proven.length]! : workers[next++ % workers.length]!;
      give(conn.relay ? grouped : plain, conn, list);
    }
    const rest = units.filter((u) => !inWhole.has(u.id));
    const direct = workers.filter((w) => !w.relay);
    const takers = direct.length > 0 ? direct : workers;
    const provenTakers = takers.filter((w) => w.results > 0);
    rest.forEach((u, k) => {
      const to = open.round.attemptsOf(u.id) > 0 && provenTakers.length > 0 ? provenTakers : takers;
      give(plain, to[(k + reduceGroupOf(u.id, groupSize)) % to.length]!, [u]);
    });
    for (const [conn, share] of grouped) this.sendWork(conn, open, share.sort((a, b) => a.id - b.id), true);
    for (const [conn, share] of plain) this.sendWork(conn, open, share.sort((a, b) => a.id - b.id));
  }

  private begin(open: OpenRound, weights: VersionedState): void {
    if (this.deps.stopping()) throw poolClosed();
    if (this.open) throw new FlockError(ErrorCode.UNSUPPORTED, 'the worker pool runs one step or evaluation at a time');
    if (this.weights?.version !== weights.version) {
      // A copy: the trainer updates its state in place after the step. Welcome frames carry
      // float32 weights; work carries them at the run's wire precision.
      const state = cloneState(weights.state);
      const wire = stateToWire(state);
      const sent = this.deps.wirePrecision === 'float16' ? stateToWire(state, 'float16') : wire;
      this.weights = { version: weights.version, wire, encoded: encodeWeights({ version: weights.version, ...sent }) };
    }
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

  private sendWork(conn: WorkerConn, open: OpenRound, units: MicroBatch[], grouped = false): void {
    const weights = this.weights!;
    const wireUnits = units.map((u) => ({ id: u.id, indices: indicesToBytes(u.indices) }));
    const lists = units.map((u) => u.indices);
    const split = open.kind === 'gradients' ? 'train' : open.split;
    const samples = conn.samples![split].take(this.data(split), lists);
    const message = open.kind === 'gradients'
      ? { type: MessageType.ASSIGN, epoch: open.work.epoch, step: open.work.globalStep, weightsVersion: weights.version, microBatches: wireUnits, samples, ...(grouped ? { grouped: true } : {}) } as const
      : { type: MessageType.EVALUATE, requestId: open.round.key, weightsVersion: weights.version, split: open.split, chunks: wireUnits, samples } as const;
    // The weights ride in the same frame when this worker lacks them: one message per step.
    const frame = conn.weightsVersion === weights.version ? encode(message) : encodeWithWeights(message, weights.encoded);
    conn.weightsVersion = weights.version;
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

  /** Results of one message (one unit, or a relay's whole group: one result for the fleet's pace). */
  private accepted<R>(conn: WorkerConn, round: WorkRound<R>, done: readonly (readonly [number, R])[], computeMs: number): void {
    const kind = this.open!.kind;
    const now = this.deps.clock.now();
    this.pace.record(kind, now - conn.lastProgress);
    if (kind === 'gradients') {
      conn.trainTiming.results++;
      conn.trainTiming.computeMs += computeMs;
      conn.trainTiming.elapsedMs += Math.max(computeMs, now - conn.lastProgress);
    }
    conn.lastProgress = now;
    conn.results += done.length;
    for (const [id] of done) conn.outstanding.delete(id);
    this.watch(conn, kind);
    done.forEach(([id, result], i) => {
      const ms = i === 0 ? computeMs : 0;
      conn.log.debug({ event: 'result', kind, key: round.key, unit: id, computeMs: ms }, 'result accepted');
      round.complete(id, conn.id, result, ms);
    });
  }
}
