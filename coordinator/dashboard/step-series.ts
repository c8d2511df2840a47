// The images/s-per-step curve, downsampled to a bounded number of points (the page draws
// it; plain data, no DOM). Consecutive steps share a bucket whose rate is its images over
// its seconds (time-weighted, as the run's own images/s is); when there are more buckets
// than maxPoints, neighbours merge pairwise and buckets hold twice as many steps. Adding a
// step is O(1) amortised and the curve never has more than maxPoints points, however long
// the run, so drawing it costs the same at step 100 and at step 100,000.
import type { StepPoint } from './run-state.js';

export class StepSeries {
  /** Last global step of each bucket (the x of its point). */
  private xs: number[] = [];
  private images: number[] = [];
  private seconds: number[] = [];
  /** Steps in each bucket. */
  private counts: number[] = [];
  /** Steps a bucket holds before the next one starts. */
  private width = 1;
  private added = 0;

  constructor(private readonly maxPoints: number) {
    if (!Number.isInteger(maxPoints) || maxPoints < 2) throw new RangeError(`maxPoints must be an integer >= 2, not ${maxPoints}`);
  }

  /** Steps added since the last reset. */
  get steps(): number {
    return this.added;
  }

  /** Points now (at most maxPoints). */
  get length(): number {
    return this.xs.length;
  }

  /** Starts again from these steps (a snapshot). */
  reset(steps: readonly StepPoint[]): void {
    this.xs = [];
    this.images = [];
    this.seconds = [];
    this.counts = [];
    this.width = 1;
    this.added = 0;
    for (const s of steps) this.add(s);
  }

  add(s: StepPoint): void {
    this.added++;
    // A rollback computes steps again: the curve goes back to where it resumes.
    while (this.xs.length > 0 && this.xs[this.xs.length - 1]! >= s.globalStep) this.pop();
    const last = this.xs.length - 1;
    if (last >= 0 && this.counts[last]! < this.width) {
      this.xs[last] = s.globalStep;
      this.images[last]! += s.images;
      this.seconds[last]! += s.seconds;
      this.counts[last]!++;
      return;
    }
    this.xs.push(s.globalStep);
    this.images.push(s.images);
    this.seconds.push(s.seconds);
    this.counts.push(1);
    if (this.xs.length > this.maxPoints) this.halve();
  }

  /** [global steps, images/s] for uPlot: fresh arrays of at most maxPoints. */
  data(): [number[], number[]] {
    return [this.xs.slice(), this.xs.map((_, i) => (this.seconds[i]! > 0 ? this.images[i]! / this.seconds[i]! : 0))];
  }

  private pop(): void {
    this.xs.pop();
    this.images.pop();
    this.seconds.pop();
    this.counts.pop();
  }

  /** Merges neighbouring buckets: half as many, each twice as wide. */
  private halve(): void {
    const n = this.xs.length;
    let j = 0;
    for (let i = 0; i < n; i += 2, j++) {
      const k = Math.min(i + 1, n - 1);
      const both = k !== i;
      this.xs[j] = this.xs[k]!;
      this.images[j] = this.images[i]! + (both ? this.images[k]! : 0);
      this.seconds[j] = this.seconds[i]! + (both ? this.seconds[k]! : 0);
      this.counts[j] = this.counts[i]! + (both ? this.counts[k]! : 0);
    }
    this.xs.length = this.images.length = this.seconds.length = this.counts.length = j;
    this.width *= 2;
  }
}
