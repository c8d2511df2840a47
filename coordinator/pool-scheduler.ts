// Scheduling of one open round at a time (a training step or an evaluation): its units are
// spread round-robin over ready workers, results are accepted only from the worker that
// holds the unit, a worker that makes no progress within a deadline derived from the
// fleet's measured pace is dropped, and a departed worker's units go back to the others:
// to workers that have returned results when there are any (so a token holder whose
// connections stall cannot draw the same units again and again), and at most --max-attempts
// times each. Results come back in unit-id order. With relays in the fleet, training steps
// are dealt as whole reduce groups (dispatchGroups) and a relay answers each with one sum.
// With a verifier (issue 12) every round's results are checked before they are returned:
// some units are computed again, by another worker (a round that excludes the first one) or
// by the coordinator's arbiter. A relay's group sum has no per-micro-batch gradient: it is
// never audited, but its guards still apply (failing ones are computed again here).
import type { Dataset } from '../shared/data/cifar.js';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { cloneState, type ModelSpec, type ModelState } from '../shared/models/spec.js';
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
import type { Arbiter } from './arbiter.js';
import type { Evidence } from './quarantine.js';
import { COORDINATOR_ID, type Computed, type Participant, type RecomputeContext, type Verifier } from './verifier.js';
import type { WorkerConn } from './worker-conn.js';
import { WorkRound, poolClosed } from './work-round.js';

type OpenRound =
  // `plain`: a round of second computations (audits), never dealt as whole groups to relays.
  | { readonly kind: 'gradients'; readonly round: WorkRound<GradientResult>; readonly work: StepWork; readonly weightsVersion: number; readonly sum: StepSum; readonly plain?: boolean }
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
  private weights: { version: number; wire: WireState; encoded: EncodedWeights; state: ModelState } | undefined;
  private readonly pace: ResultPace;
  /** Who returned results, by connection id (names outlive connections, for the evidence). */
  private readonly participants = new Map<number, Participant>();
  private dispatching = false;
  private dispatchAgain = false;
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
    return this.open !== undefined && this.open.round.hasUnassigned();
  }

  async gradients(work: StepWork, weights: VersionedState): Promise<GradientsOutcome> {
    const start = this.deps.clock.now();
    this.load(weights);
    const buffers = this.gradientBuffers;
    buffers.free.push(...buffers.lent.splice(0));
    const verify = this.deps.verify;
    const ids = work.microBatches.map((u) => u.id).sort((a, b) => a - b);
    const groupSize = work.reduceGroup ?? 0;
    // Summed as results arrive, in micro-batch id order whatever the arrival order. With a
    // verifier a non-finite gradient is data (the guards have it computed again), not a refusal.
    const sum = new StepSum(ids, this.sizes(), !verify, groupSize);
    const { computed, computeMs, waitingMs } = await this.collect<GradientResult>({ kind: 'gradients', round: new WorkRound(work.globalStep, work.microBatches), work, weightsVersion: weights.version, sum });
    const checked = verify ? await this.verifyGradients(work, weights.version, computed, sum, verify) : undefined;
    const results = checked?.results ?? computed.map((c) => c.result);
    const final = checked?.sum ?? sum;
    const groups = final.groupSums();
    const reduced = final.finish();
    const now = this.deps.clock.now();
    return { results, reduced, groups, timing: { computeMs, waitingMs, communicationMs: Math.max(0, now - start - computeMs - waitingMs) } };
  }

  private sizes(): number[] {
    return this.deps.model.params.map((p) => p.size);
  }

  /**
   * The verifier's checks of a step: units computed by workers go through the guards and the
   * audits; a relay's group (only its sum exists) through the guards of sums, and a group that
   * fails them is computed again by the coordinator. When any result was replaced, the step
   * is summed again (same canonical order, so the same bits as a step that needed nothing).
   */
  private async verifyGradients(
    work: StepWork, version: number, computed: readonly Computed<GradientResult>[], sum: StepSum, verify: NonNullable<SchedulerDeps['verify']>,
  ): Promise<{ results: GradientResult[]; sum?: StepSum }> {
    const units = work.microBatches;
    const at = new Map(units.map((u, i) => [u.id, i]));
    const groupSize = work.reduceGroup ?? 0;
    const grouped = sum.groupIds().filter((g) => g.ids.every((id) => computed[at.get(id)!]!.result.grads.length === 0));
    const inGroups = new Set(grouped.flatMap((g) => g.ids));
    const direct = units.flatMap((u, i) => (inGroups.has(u.id) ? [] : [i]));
    const results = computed.map((c) => c.result);
    const ctx = this.recompute<GradientResult>(
      (us, exclude) => ({ kind: 'gradients', round: new WorkRound(work.globalStep, us, exclude), work, weightsVersion: version, sum: new StepSum(us.map((u) => u.id), this.sizes(), false, groupSize), plain: true }),
      (unit) => verify.arbiter.gradient(this.weights!.state, this.weights!, work.globalStep, unit));
    if (direct.length > 0) {
      const used = await verify.verifier.gradients(work.globalStep, direct.map((i) => units[i]!), direct.map((i) => computed[i]!), ctx);
      direct.forEach((i, k) => { results[i] = used[k]!; });
    }
    const sums = new Map(sum.groupSums().map((g) => [g.group, g.sums]));
    const redone = new Set<number>();
    for (const g of grouped) {
      const parts = g.ids.map((id) => results[at.get(id)!]!);
      const whole: GradientResult = {
        grads: [...sums.get(g.group)!], lossSum: parts.reduce((a, r) => a + r.lossSum, 0), correct: parts.reduce((a, r) => a + r.correct, 0),
        count: parts.reduce((a, r) => a + r.count, 0), batchStats: parts.flatMap((r) => r.batchStats),
      };
      if (verify.verifier.groupSum(work.globalStep, g.group, whole, computed[at.get(g.ids[0]!)!]!.by) === undefined) continue;
      for (const id of g.ids) results[at.get(id)!] = await verify.arbiter.gradient(this.weights!.state, this.weights!, work.globalStep, units[at.get(id)!]!);
      redone.add(g.group);
    }
    if (redone.size === 0 && results.every((r, i) => r === computed[i]!.result)) return { results };
    const again = new StepSum(units.map((u) => u.id).sort((a, b) => a - b), this.sizes(), false, groupSize);
    for (const g of sum.groupIds()) {
      if (inGroups.has(g.ids[0]!) && !redone.has(g.group)) again.addGroup(g.group, sums.get(g.group)!.map((t) => t.slice()), new Map(g.ids.map((id) => [id, results[at.get(id)!]!])));
      else for (const id of g.ids) again.add(id, results[at.get(id)!]!);
    }
    return { results, sum: again };
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
    const buffers = this.gradientBuffers;
    const into = buffers.free.pop() ?? new Float32Array(this.deps.model.parameterCount);
    try {
      open.sum.add(unit.id, checkGradient(msg, this.deps.model, unit.indices.length, into, this.deps.wirePrecision, !this.deps.verify));
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
      const { sums, parts } = checkGroupSum(msg, this.deps.model, units.map((u) => u.indices.length), into, !this.deps.verify);
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
    this.accepted(conn, open.round, [[unit.id, checkEvaluation(msg, unit.indices.length, !this.deps.verify)]], msg.computeMs);
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
      const share = shares.get(w);
      if (share) share.push(u);
      else shares.set(w, [u]);
    });
    const relays = workers.filter((w) => w.relay);
    if (open.kind === 'gradients' && !open.plain && relays.length > 0) return this.dispatchGroups(open, units, workers, proven);
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
      (r) => {
        if (open.kind === 'gradients') open.sum.add(unit.id, r as GradientResult);
        (open.round as WorkRound<unknown>).complete(unit.id, COORDINATOR_ID, r, this.deps.clock.now() - started);
      },
      (err: unknown) => open.round.fail(err),
    );
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

  /** Makes `weights` the ones rounds are computed at (encoded once per version). */
  private load(weights: VersionedState): void {
    if (this.deps.stopping()) throw poolClosed();
    if (this.weights?.version !== weights.version) {
      // A copy: the trainer updates its state in place after the step. Welcome frames carry
      // float32 weights; work carries them at the run's wire precision.
      const state = cloneState(weights.state);
      const wire = stateToWire(state);
      const sent = this.deps.wirePrecision === 'float16' ? stateToWire(state, 'float16') : wire;
      this.weights = { version: weights.version, wire, state, encoded: encodeWeights({ version: weights.version, ...sent }) };
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

  private sendWork(conn: WorkerConn, open: OpenRound, units: MicroBatch[], grouped = false): void {
    const weights = this.weights!;
    if (conn.state !== 'ready') return;
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
    // Guarded: the record is built per worker per step, and debug is usually off.
    if (conn.log.isLevelEnabled('debug')) conn.log.debug({
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
    if (!this.participants.has(conn.id)) this.participants.set(conn.id, { id: conn.id, name: conn.name, backend: conn.backend });
    this.watch(conn, kind);
    // A second computation (an audit, or a unit computed again) is marked: it is not the step's result.
    const second = this.open!.kind === 'gradients' && this.open!.plain === true;
    const debug = conn.log.isLevelEnabled('debug');
    done.forEach(([id, result], i) => {
      const ms = i === 0 ? computeMs : 0;
      if (debug) conn.log.debug({ event: 'result', kind, key: round.key, unit: id, computeMs: ms, ...(second ? { second: true } : {}) }, 'result accepted');
      round.complete(id, conn.id, result, ms);
    });
  }
}
