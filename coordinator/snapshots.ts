// In-memory copies of the trainer's state (issue 12), so that the contributions of a worker
// proven wrong can be undone exactly: the state before each of the last `recent` steps,
// and the state at the start of every epoch for the whole run (which bounds any replay to
// the epoch where the worker's first unverified contribution lies).
import type { Checkpoint } from './checkpoint.js';

export const SNAPSHOT_STEPS = 256;

export class Snapshots {
  private recent: Checkpoint[] = [];
  private epochStarts: Checkpoint[] = [];

  constructor(private readonly keep: number = SNAPSHOT_STEPS) {}

  /** Keeps `c`, the state before step `c.globalStep` (arrays the caller never writes again: no copy is made). */
  save(c: Checkpoint): void {
    this.recent = this.recent.filter((s) => s.globalStep < c.globalStep);
    this.recent.push(c);
    if (this.recent.length > this.keep) this.recent.shift();
    if (c.stepInEpoch === 0) {
      this.epochStarts = this.epochStarts.filter((s) => s.globalStep < c.globalStep);
      this.epochStarts.push(c);
    }
  }

  /** The newest state from before step `step` ran (or exactly at it). */
  atOrBefore(step: number): Checkpoint | undefined {
    const pick = (list: readonly Checkpoint[]): Checkpoint | undefined => list.filter((s) => s.globalStep <= step).at(-1);
    const a = pick(this.recent);
    const b = pick(this.epochStarts);
    if (!a) return b;
    if (!b) return a;
    return a.globalStep >= b.globalStep ? a : b;
  }

  /** Forgets states after `step` (they belong to undone steps). */
  dropAfter(step: number): void {
    this.recent = this.recent.filter((s) => s.globalStep <= step);
    this.epochStarts = this.epochStarts.filter((s) => s.globalStep <= step);
  }
}
