// Verified steps (issue 12). Every result passes the guards (guards.ts) before it is used;
// one that fails is computed again by the coordinator. At --audit-rate, one micro-batch of
// a step (drawn from --audit-seed and the step) is computed a second time by another worker,
// which cannot tell it from ordinary work; every validation chunk is computed twice. Two
// computations that disagree (agreement.ts) are settled by the coordinator's own; whoever
// disagrees with it is quarantined. The coordinator then undoes that worker's unverified
// contributions: it asks the trainer to roll back to the first of them and replay.
import type { Logger } from 'pino';
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { EvalResult, GradientResult } from '../shared/models/runtime.js';
import { mixSeed } from '../shared/random.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { evaluationsAgree, gradientsAgree, largestDifference, type Agreement } from './agreement.js';
import { Guards, gradientNorm } from './guards.js';
import type { Evidence } from './quarantine.js';

/** Who computed a result; id 0 is the coordinator itself. */
export interface Participant {
  readonly id: number;
  readonly name: string;
  readonly backend: string;
}

export const COORDINATOR_ID = 0;

export interface Computed<R> {
  readonly result: R;
  readonly by: Participant;
}

export interface VerificationCounters {
  /** Micro-batches computed a second time by audit. */
  readonly audits: number;
  /** Validation chunks computed a second time. */
  readonly validationChecks: number;
  /** Results that failed a guard (and were recomputed). */
  readonly guardFailures: number;
  /** Pairs of computations that disagreed. */
  readonly mismatches: number;
  readonly quarantines: number;
  /** Steps computed again after a rollback (counted by the trainer). */
  readonly replayedSteps: number;
}

export const NO_COUNTS: VerificationCounters = { audits: 0, validationChecks: 0, guardFailures: 0, mismatches: 0, quarantines: 0, replayedSteps: 0 };

export interface VerifyOptions {
  /** Probability that a step has one micro-batch audited. */
  readonly auditRate: number;
  readonly auditSeed: number;
}

export const VERIFY_DEFAULTS: VerifyOptions = { auditRate: 0.05, auditSeed: 0 };

/** What the scheduler lends the verifier for one round's checks. */
export interface RecomputeContext<R> {
  /** Has other workers compute `units` (never the one in `exclude`); the coordinator steps in where none can. */
  readonly byOthers: (units: readonly MicroBatch[], exclude: ReadonlyMap<number, ReadonlySet<number>>) => Promise<Computed<R>[]>;
  /** The coordinator's own computation of a unit. */
  readonly byCoordinator: (unit: MicroBatch) => Promise<Computed<R>>;
  /** Quarantines a worker proven wrong; false when it already was. */
  readonly convict: (e: Evidence) => boolean;
}

interface Kind<R> {
  readonly name: 'gradients' | 'evaluate';
  readonly agree: (a: R, b: R, exact: boolean) => Agreement;
  /** A number to log for each side of a disagreement. */
  readonly size: (r: R) => number;
  /** The largest relative difference between two computations (logged with every comparison). */
  readonly difference: (a: R, b: R) => number;
}

const relativeLoss = (a: number, b: number): number => (a === b ? 0 : Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b)));
const GRADIENTS: Kind<GradientResult> = { name: 'gradients', agree: gradientsAgree, size: gradientNorm, difference: largestDifference };
const EVALUATIONS: Kind<EvalResult> = { name: 'evaluate', agree: evaluationsAgree, size: (r) => r.lossSum / Math.max(1, r.count), difference: (a, b) => relativeLoss(a.lossSum, b.lossSum) };

export class Verifier {
  private readonly guards = new Guards();
  private counts = { ...NO_COUNTS };
  /** Per worker name: global step of its first contribution that no second computation confirmed. */
  private readonly unverified = new Map<string, number>();
  private rollbackTo: { step: number; reason: string } | undefined;

  constructor(private readonly opts: VerifyOptions, private readonly log: Logger) {
    if (!(opts.auditRate >= 0 && opts.auditRate <= 1)) throw new FlockError(ErrorCode.BAD_OPTION, `--audit-rate must be between 0 and 1 (got ${opts.auditRate})`);
  }

  counters(): VerificationCounters {
    return this.counts;
  }

  /** A rollback the trainer must do before going on (a worker was convicted); cleared by reading. */
  takeRollback(): { step: number; reason: string } | undefined {
    const r = this.rollbackTo;
    this.rollbackTo = undefined;
    return r;
  }

  /** The trainer went back to `step`: contributions from there on are undone. */
  rewound(step: number): void {
    for (const [name, s] of this.unverified) if (s >= step) this.unverified.delete(name);
  }

  /** The micro-batch (position) audited in `step`, if any. */
  auditedIndex(step: number, units: number): number | undefined {
    const u = mixSeed(this.opts.auditSeed, step, 0x5a0d17) / 4294967296;
    if (units === 0 || u >= this.opts.auditRate) return undefined;
    return mixSeed(this.opts.auditSeed, step, 0x1d3c) % units;
  }

  /** Checks a step's results; returns the ones to use, ordered like `units`. */
  async gradients(step: number, units: readonly MicroBatch[], got: readonly Computed<GradientResult>[], ctx: RecomputeContext<GradientResult>): Promise<GradientResult[]> {
    const second = new Map<number, 'worker' | 'coordinator'>();
    got.forEach((c, i) => {
      const why = this.guards.gradient(c.result);
      if (why === undefined) return;
      this.counts = { ...this.counts, guardFailures: this.counts.guardFailures + 1 };
      this.log.warn({ event: 'guard_failed', step, microBatch: units[i]!.id, workerId: c.by.id, workerName: c.by.name, why }, `result of micro-batch ${units[i]!.id} of step ${step} from ${c.by.name} failed a guard (${why}); computing it again`);
      second.set(i, 'coordinator');
    });
    const audited = this.auditedIndex(step, units.length);
    if (audited !== undefined && !second.has(audited)) {
      second.set(audited, 'worker');
      this.counts = { ...this.counts, audits: this.counts.audits + 1 };
    }
    const used = await this.settle(GRADIENTS, step, units, got, second, ctx);
    for (const r of used) this.guards.record(r);
    return used;
  }

  /**
   * The guards of a relay's group sum (no per-micro-batch gradient exists, so it is neither
   * audited nor norm-checked); why it fails, counted and logged, or undefined.
   */
  groupSum(step: number, group: number, sum: GradientResult, by: Participant): string | undefined {
    const why = this.guards.sum(sum);
    if (why === undefined) return undefined;
    this.counts = { ...this.counts, guardFailures: this.counts.guardFailures + 1 };
    this.log.warn({ event: 'guard_failed', step, group, workerId: by.id, workerName: by.name, why }, `sum of group ${group} of step ${step} from ${by.name} failed a guard (${why}); the coordinator computes its micro-batches again`);
    return why;
  }

  /** Checks an evaluation's results: every chunk is computed a second time by someone else. */
  async evaluations(requestId: number, step: number, chunks: readonly MicroBatch[], got: readonly Computed<EvalResult>[], ctx: RecomputeContext<EvalResult>): Promise<EvalResult[]> {
    const second = new Map<number, 'worker' | 'coordinator'>();
    got.forEach((c, i) => {
      const why = this.guards.evaluation(c.result);
      if (why !== undefined) {
        this.counts = { ...this.counts, guardFailures: this.counts.guardFailures + 1 };
        this.log.warn({ event: 'guard_failed', requestId, chunk: chunks[i]!.id, workerId: c.by.id, workerName: c.by.name, why }, `evaluation of chunk ${chunks[i]!.id} from ${c.by.name} failed a guard (${why}); computing it again`);
      }
      second.set(i, why === undefined ? 'worker' : 'coordinator');
    });
    this.counts = { ...this.counts, validationChecks: this.counts.validationChecks + chunks.length };
    return this.settle(EVALUATIONS, step, chunks, got, second, ctx, requestId);
  }

  /**
   * Computes the units in `second` again, compares, settles disagreements with the
   * coordinator's computation, convicts, records unverified contributions and any rollback.
   */
  private async settle<R>(kind: Kind<R>, step: number, units: readonly MicroBatch[], got: readonly Computed<R>[], second: ReadonlyMap<number, 'worker' | 'coordinator'>, ctx: RecomputeContext<R>, requestId?: number): Promise<R[]> {
    const byWorker = [...second].filter(([, who]) => who === 'worker').map(([i]) => i).sort((a, b) => a - b);
    const exclude = new Map(byWorker.map((i) => [units[i]!.id, new Set([got[i]!.by.id])]));
    const others = byWorker.length > 0 ? await ctx.byOthers(byWorker.map((i) => units[i]!), exclude) : [];
    const again = new Map<number, Computed<R>>(byWorker.map((i, k) => [i, others[k]!]));
    for (const [i, who] of second) if (who === 'coordinator') again.set(i, await ctx.byCoordinator(units[i]!));

    const used = got.map((c) => c.result);
    const verified = new Set<number>();
    const convicted: Participant[] = [];
    for (const [i, b] of [...again].sort(([x], [y]) => x - y)) {
      const a = got[i]!;
      const unit = units[i]!;
      const where = requestId === undefined ? `micro-batch ${unit.id} of step ${step}` : `validation chunk ${unit.id} at step ${step}`;
      const exact = a.by.backend === b.by.backend;
      const agreement = kind.agree(a.result, b.result, exact);
      // Every comparison, for the record: which backends, and how far apart (0 when exact and agreeing).
      if (this.log.isLevelEnabled('debug')) {
        this.log.debug({
          event: 'compared', kind: kind.name, step, unit: unit.id, first: a.by.name, firstBackend: a.by.backend, second: b.by.name, secondBackend: b.by.backend,
          exact, agreement, difference: exact && agreement === 'agree' ? 0 : kind.difference(a.result, b.result),
        }, `${where}: ${a.by.name} (${a.by.backend}) and ${b.by.name} (${b.by.backend}) ${agreement === 'agree' ? 'agree' : 'disagree'}`);
      }
      if (agreement === 'both-non-finite') {
        throw new FlockError(ErrorCode.DIVERGED, `training diverged at step ${step}: ${where} is not finite as computed by ${a.by.name} and by ${b.by.name}; ` +
          'the weights of the last good step are kept and the newest checkpoint is intact; lower --lr (or raise --weight-decay) and start again');
      }
      if (agreement === 'agree') {
        verified.add(i);
        continue;
      }
      this.counts = { ...this.counts, mismatches: this.counts.mismatches + 1 };
      // Settled by the coordinator's own computation (a third one, unless it made the second).
      const c = b.by.id === COORDINATOR_ID ? b : await ctx.byCoordinator(unit);
      const wrong = [a, b].filter((x) => x.by.id !== COORDINATOR_ID && kind.agree(x.result, c.result, x.by.backend === c.by.backend) !== 'agree');
      const right = [a, b].find((x) => x.by.id !== COORDINATOR_ID && !wrong.includes(x));
      this.log.warn({ event: 'mismatch', kind: kind.name, step, unit: unit.id, first: a.by.name, second: b.by.name, firstSize: kind.size(a.result), secondSize: kind.size(b.result), settledSize: kind.size(c.result) },
        `${where}: ${a.by.name} and ${b.by.name} disagree; the coordinator's computation sides with ${right?.by.name ?? 'neither'}`);
      used[i] = c.result;
      verified.add(i);
      for (const w of wrong) {
        convicted.push(w.by);
        const first = ctx.convict({
          workerName: w.by.name, workerId: w.by.id, backend: w.by.backend, kind: kind.name, step: requestId ?? step, unit: unit.id,
          claimed: kind.size(w.result), settled: kind.size(c.result), arbiter: right ? `coordinator and ${right.by.name}` : 'coordinator',
          why: `${where} disagrees with the coordinator's computation`,
        });
        if (first) this.counts = { ...this.counts, quarantines: this.counts.quarantines + 1 };
      }
    }
    if (requestId === undefined) {
      got.forEach((c, i) => {
        if (verified.has(i) || c.by.id === COORDINATOR_ID) return;
        if (!this.unverified.has(c.by.name)) this.unverified.set(c.by.name, step);
      });
    }
    for (const p of convicted) {
      const first = this.unverified.get(p.name);
      this.unverified.delete(p.name);
      if (first !== undefined && (this.rollbackTo === undefined || first < this.rollbackTo.step)) {
        this.rollbackTo = { step: first, reason: `${p.name} was quarantined; its unverified contributions start at step ${first}` };
      }
    }
    return used;
  }
}
