// Reduction of micro-batch results into one step, always in micro-batch order so the sum
// (and therefore the weights) do not depend on which worker computed what or when.
import type { BatchStats, GradientResult } from '../models/runtime.js';
import { allFinite, finiteInto } from '../tensor-codec.js';

export interface StepResult {
  /** Mean gradient over the step's samples (without weight decay). */
  readonly grads: Float32Array[];
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  /** Per batch-norm layer: mean and unbiased variance over the whole step. */
  readonly batchStats: { mean: Float32Array; unbiasedVariance: Float32Array }[];
}

/** `results` must be ordered by micro-batch id (ids 0..n-1); `groupSize` as in StepSum. */
export function reduceStep(results: readonly GradientResult[], groupSize = 0): StepResult {
  const first = results[0];
  if (!first) throw new RangeError('reduceStep: no micro-batch results');
  const sum = new StepSum(results.map((_, i) => i), first.grads.map((g) => g.length), false, groupSize);
  results.forEach((r, i) => sum.add(i, r));
  return sum.finish();
}

/** A result of the sum whose gradient holds NaN or Infinity; the sum is left as it was. */
export class NotFiniteError extends RangeError {
  constructor(readonly unit: number, readonly tensor: number) {
    super(`gradient ${tensor} of unit ${unit} contains NaN or Infinity`);
  }
}

/**
 * The canonical reduction tree: micro-batch `id` (its position in the step) belongs to group
 * floor(id / groupSize); groupSize 0 puts the whole step in one group. Every process that
 * sums (in-process trainer, coordinator, relay) uses this, so the bits never depend on who
 * computed what.
 */
export function reduceGroupOf(id: number, groupSize: number): number {
  return groupSize > 0 ? Math.floor(id / groupSize) : 0;
}

/** acc += g in float32; false if g held NaN or Infinity (the sum is then partly updated: see rebuild). */
function addChecked(acc: Float32Array, g: Float32Array): boolean {
  return finiteInto(g, acc);
}

/** One reduce group of a step: its members (positions, in id order) and their running sum. */
interface Group {
  readonly key: number;
  readonly members: number[];
  acc: Float32Array[];
  /** Members 0..added-1 are in `acc`. */
  added: number;
}

/** A whole group's sum, as a relay sends it upstream (gradient sums before the division by the count). */
export interface GroupSum {
  readonly group: number;
  readonly ids: readonly number[];
  readonly sums: readonly Float32Array[];
}

/**
 * The step's gradient sum, built while results arrive, over the canonical tree: each group's
 * members are added in id order into the group's sum (from zero), and the group sums in group
 * order into the step's sum (from zero). Whatever the arrival order, a result is added as soon
 * as all before it in its group are in, and a group as soon as all groups before it are
 * complete, so the bits are those of reduceStep. A whole group's sum may also come at once
 * (`addGroup`, from a relay that summed it the same way). With `checked`, a result with a
 * non-finite gradient is refused (NotFiniteError) and leaves the sum as it was; the
 * finiteness check is fused with the addition when the result is next in order.
 */
export class StepSum {
  private readonly total: Float32Array[];
  private readonly position: Map<number, number>;
  private readonly ids: readonly number[];
  private readonly results: (GradientResult | undefined)[];
  private readonly groups: Group[];
  /** Group of each position (an index into `groups`). */
  private readonly groupAt: number[];
  /** Groups 0..groupsAdded-1 are in `total`. */
  private groupsAdded = 0;
  private finished = false;

  constructor(ids: readonly number[], private readonly sizes: readonly number[], private readonly checked: boolean, readonly groupSize = 0) {
    this.ids = ids;
    this.total = sizes.map((n) => new Float32Array(n));
    this.position = new Map(ids.map((id, i) => [id, i]));
    this.results = ids.map(() => undefined);
    const byKey = new Map<number, number>();
    this.groups = [];
    this.groupAt = ids.map((id, at) => {
      const key = reduceGroupOf(id, groupSize);
      let index = byKey.get(key);
      if (index === undefined) {
        index = this.groups.push({ key, members: [], acc: [], added: 0 }) - 1;
        byKey.set(key, index);
      }
      this.groups[index]!.members.push(at);
      return index;
    });
  }

  private layout: { group: number; ids: number[] }[] | undefined;

  /** The group keys of this step, in order, with their members' ids (do not modify). */
  groupIds(): readonly { readonly group: number; readonly ids: readonly number[] }[] {
    this.layout ??= this.groups.map((g) => ({ group: g.key, ids: g.members.map((at) => this.ids[at]!) }));
    return this.layout;
  }

  add(id: number, r: GradientResult): void {
    const at = this.position.get(id);
    if (at === undefined) throw new RangeError(`StepSum: unit ${id} is not part of this step`);
    if (this.results[at]) throw new RangeError(`StepSum: unit ${id} was added twice`);
    this.checkSizes(r.grads, `unit ${id}`);
    const g = this.groups[this.groupAt[at]!]!;
    if (g.members[g.added] === at) {
      if (g.added === 0) g.acc = this.sizes.map((n) => new Float32Array(n));
      const bad = r.grads.findIndex((t, k) => !addChecked(g.acc[k]!, t) && this.checked);
      if (bad >= 0) {
        this.rebuild(g);
        throw new NotFiniteError(id, bad);
      }
      this.results[at] = r;
      g.added++;
      this.catchUp(g);
    } else {
      const bad = this.checked ? r.grads.findIndex((t) => !allFinite(t)) : -1;
      if (bad >= 0) throw new NotFiniteError(id, bad);
      this.results[at] = r;
    }
  }

  /**
   * A whole group at once: its sum (taken over, not copied) and each member's result without
   * gradients (counts and statistics), by id. No member may have been added before.
   */
  addGroup(group: number, sums: Float32Array[], parts: ReadonlyMap<number, GradientResult>): void {
    const g = this.groups.find((x) => x.key === group);
    if (!g) throw new RangeError(`StepSum: group ${group} is not part of this step`);
    if (parts.size !== g.members.length || g.members.some((at) => !parts.has(this.ids[at]!))) throw new RangeError(`StepSum: group ${group} needs results for exactly [${g.members.map((at) => this.ids[at]).join(', ')}]`);
    if (g.members.some((at) => this.results[at] !== undefined)) throw new RangeError(`StepSum: group ${group} already has results`);
    this.checkSizes(sums, `group ${group}`);
    const bad = this.checked ? sums.findIndex((t) => !allFinite(t)) : -1;
    if (bad >= 0) throw new NotFiniteError(this.ids[g.members[0]!]!, bad);
    for (const at of g.members) this.results[at] = parts.get(this.ids[at]!)!;
    g.acc = sums;
    g.added = g.members.length;
    this.catchUpGroups();
  }

  /** The result added for unit `id`, if any. */
  result(id: number): GradientResult | undefined {
    const at = this.position.get(id);
    return at === undefined ? undefined : this.results[at];
  }

  /** Each group's sum (before the division by the count), once every unit is in. */
  groupSums(): GroupSum[] {
    if (this.groupsAdded < this.groups.length) throw new RangeError('StepSum: groups missing');
    return this.groups.map((g) => ({ group: g.key, ids: g.members.map((at) => this.ids[at]!), sums: g.acc }));
  }

  /** The mean gradient and pooled statistics; every unit must have been added. */
  finish(): StepResult {
    const missing = this.results.filter((r) => r === undefined).length;
    if (missing > 0 || this.groupsAdded < this.groups.length) throw new RangeError(`StepSum: ${missing} of ${this.results.length} units missing`);
    if (this.finished) throw new RangeError('StepSum: finished twice');
    this.finished = true;
    const results = this.results as GradientResult[];
    const { lossSum, correct, count } = sumTallies(results);
    for (const acc of this.total) for (let i = 0; i < acc.length; i++) acc[i]! /= count;
    return { grads: this.total, lossSum, correct, count, batchStats: poolBatchStats(results.map((r) => ({ stats: r.batchStats, count: r.count })), count) };
  }

  private checkSizes(grads: readonly Float32Array[], what: string): void {
    if (grads.length !== this.sizes.length) throw new RangeError(`StepSum: ${what} has ${grads.length} gradient tensors, expected ${this.sizes.length}`);
    grads.forEach((g, k) => {
      if (g.length !== this.sizes[k]) throw new RangeError(`StepSum: gradient ${k} of ${what} has ${g.length} values, expected ${this.sizes[k]}`);
    });
  }

  /** Adds the results of `g` waiting behind the one just added; a complete group goes on to the total. */
  private catchUp(g: Group): void {
    for (let r = this.results[g.members[g.added]!]; g.added < g.members.length && r !== undefined; r = this.results[g.members[g.added]!]) {
      r.grads.forEach((t, k) => addChecked(g.acc[k]!, t));
      g.added++;
    }
    if (g.added === g.members.length) this.catchUpGroups();
  }

  /** Adds the complete groups waiting in order into the step's total. */
  private catchUpGroups(): void {
    for (let g = this.groups[this.groupsAdded]; g !== undefined && g.added === g.members.length; g = this.groups[this.groupsAdded]) {
      g.acc.forEach((t, k) => addChecked(this.total[k]!, t));
      this.groupsAdded++;
    }
  }

  /** The group's sum of its members before `added`, again, in order (after a refused result touched it). */
  private rebuild(g: Group): void {
    for (const acc of g.acc) acc.fill(0);
    for (let i = 0; i < g.added; i++) this.results[g.members[i]!]!.grads.forEach((t, k) => addChecked(g.acc[k]!, t));
  }
}

/** Loss sum, correct and sample counts added over results (of a step, or of a validation pass). */
export function sumTallies(results: readonly { lossSum: number; correct: number; count: number }[]): { lossSum: number; correct: number; count: number } {
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  for (const r of results) {
    lossSum += r.lossSum;
    correct += r.correct;
    count += r.count;
  }
  return { lossSum, correct, count };
}

/**
 * Pooled mean and variance of the union of the micro-batches, as one process would compute
 * them over the whole batch: mean = Σnᵢmᵢ/N, var = Σnᵢ(vᵢ + (mᵢ − mean)²)/N, then the
 * unbiased N/(N−1) correction that BatchNorm's running variance uses.
 */
export function poolBatchStats(parts: readonly { stats: readonly BatchStats[]; count: number }[], total: number): StepResult['batchStats'] {
  const layers = parts[0]?.stats.length ?? 0;
  const out: StepResult['batchStats'] = [];
  for (let l = 0; l < layers; l++) {
    const channels = parts[0]!.stats[l]!.mean.length;
    const mean = new Float64Array(channels);
    for (const p of parts) {
      const m = p.stats[l]!.mean;
      for (let c = 0; c < channels; c++) mean[c]! += p.count * m[c]!;
    }
    for (let c = 0; c < channels; c++) mean[c]! /= total;
    const variance = new Float64Array(channels);
    for (const p of parts) {
      const { mean: m, variance: v } = p.stats[l]!;
      for (let c = 0; c < channels; c++) variance[c]! += p.count * (v[c]! + (m[c]! - mean[c]!) ** 2);
    }
    const correction = total > 1 ? total / (total - 1) : 1;
    out.push({ mean: Float32Array.from(mean), unbiasedVariance: Float32Array.from(variance, (v) => (v / total) * correction) });
  }
  return out;
}
