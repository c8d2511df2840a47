// One open piece of work (a training step or an evaluation): its units (micro-batches or
// chunks), who holds which, and the results stored by unit id. Results come back in id
// order whatever order they arrived in, so the coordinator's sum never depends on timing.
import { ErrorCode, FlockError } from '../shared/errors.js';
import type { MicroBatch } from '../shared/training/schedule.js';

export class WorkRound<R> {
  private readonly units = new Map<number, MicroBatch>();
  private readonly owners = new Map<number, number>();
  /** Times each unit was handed out. */
  private readonly attempts = new Map<number, number>();
  private readonly results = new Map<number, R>();
  /** Who computed each result (worker id; 0 = the coordinator itself). */
  private readonly computedBy = new Map<number, number>();
  /** Summed reported compute time per worker id. */
  private readonly compute = new Map<number, number>();
  private waitingSince: number | undefined;
  private waited = 0;
  private settle: { resolve: (r: R[]) => void; reject: (e: unknown) => void } | undefined;
  /** Resolves with the results in unit-id order once every unit has one. */
  readonly finished: Promise<R[]>;

  /** @param exclude per unit id, workers that must not compute it */
  constructor(readonly key: number, units: readonly MicroBatch[], private readonly exclude: ReadonlyMap<number, ReadonlySet<number>> = new Map()) {
    for (const u of units) {
      if (this.units.has(u.id)) throw new RangeError(`work unit id ${u.id} appears twice`);
      this.units.set(u.id, u);
    }
    this.finished = new Promise<R[]>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    if (this.units.size === 0) this.finishIfDone();
  }

  unit(id: number): MicroBatch | undefined {
    return this.units.get(id);
  }

  /** Units with neither a result nor a worker, by id. */
  unassigned(): MicroBatch[] {
    return [...this.units.values()].filter((u) => !this.results.has(u.id) && !this.owners.has(u.id)).sort((a, b) => a.id - b.id);
  }

  /** Whether some unit has neither a result nor a worker (unassigned() without building the list). */
  hasUnassigned(): boolean {
    for (const id of this.units.keys()) if (!this.results.has(id) && !this.owners.has(id)) return true;
    return false;
  }

  /** Whether `workerId` may compute unit `unitId`. */
  eligible(unitId: number, workerId: number): boolean {
    return !(this.exclude.get(unitId)?.has(workerId) ?? false);
  }

  assign(unitId: number, workerId: number): void {
    // A unit is held by one worker at a time; handing it out twice would be a scheduler bug.
    if (this.owners.has(unitId) || this.results.has(unitId)) throw new RangeError(`work unit ${unitId} of round ${this.key} is already held or done`);
    this.owners.set(unitId, workerId);
    this.attempts.set(unitId, this.attemptsOf(unitId) + 1);
  }

  /** Times the unit was handed out so far. */
  attemptsOf(unitId: number): number {
    return this.attempts.get(unitId) ?? 0;
  }

  /** The worker holding an unfinished unit, if any. */
  ownerOf(unitId: number): number | undefined {
    return this.owners.get(unitId);
  }

  /** Takes back a departed worker's unfinished units; returns their ids. */
  release(workerId: number): number[] {
    const ids = [...this.owners].filter(([, w]) => w === workerId).map(([id]) => id).sort((a, b) => a - b);
    for (const id of ids) this.owners.delete(id);
    return ids;
  }

  complete(unitId: number, workerId: number, result: R, computeMs: number): void {
    this.owners.delete(unitId);
    this.results.set(unitId, result);
    this.computedBy.set(unitId, workerId);
    this.compute.set(workerId, (this.compute.get(workerId) ?? 0) + computeMs);
    this.finishIfDone();
  }

  /** Who computed unit `unitId` (after `finished`). */
  workerOf(unitId: number): number | undefined {
    return this.computedBy.get(unitId);
  }

  /** Unit ids in order. */
  ids(): number[] {
    return [...this.units.keys()].sort((a, b) => a - b);
  }

  /** The slowest worker's total compute in this round. */
  maxComputeMs(): number {
    return Math.max(0, ...this.compute.values());
  }

  /** Marks the start or end of a stretch with work but no worker to give it to. */
  setWaiting(waiting: boolean, now: number): void {
    if (waiting && this.waitingSince === undefined) this.waitingSince = now;
    if (!waiting && this.waitingSince !== undefined) {
      this.waited += now - this.waitingSince;
      this.waitingSince = undefined;
    }
  }

  waitingMs(now: number): number {
    return this.waited + (this.waitingSince === undefined ? 0 : now - this.waitingSince);
  }

  fail(err: unknown): void {
    this.settle?.reject(err);
    this.settle = undefined;
  }

  private finishIfDone(): void {
    if (this.results.size < this.units.size || !this.settle) return;
    const ordered = [...this.units.keys()].sort((a, b) => a - b).map((id) => this.results.get(id)!);
    this.settle.resolve(ordered);
    this.settle = undefined;
  }
}

export const poolClosed = (): FlockError => new FlockError(ErrorCode.SHUTDOWN, 'the worker pool was closed while work was outstanding');
