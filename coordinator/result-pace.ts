// The fleet's measured pace: how long workers recently took from getting work (or returning
// a result) to returning their next result, per kind of work. The deadline for a worker's
// next result is a multiple of the recent median, never below a floor and never above
// --step-timeout; until enough results are measured it is --step-timeout itself.

/** Intervals kept per kind of work. */
const WINDOW = 32;
/** Intervals needed before the median is trusted. */
const MIN_SAMPLES = 3;

export interface PaceOptions {
  readonly stepTimeoutMs: number;
  readonly stepTimeoutFloorMs: number;
  readonly deadlineFactor: number;
}

export class ResultPace {
  /** Per kind: the recent intervals in arrival order, and the same values sorted (read on every result and assignment). */
  private readonly intervals = new Map<string, { recent: number[]; sorted: number[] }>();

  constructor(private readonly opts: PaceOptions) {}

  record(kind: string, ms: number): void {
    let w = this.intervals.get(kind);
    if (!w) this.intervals.set(kind, w = { recent: [], sorted: [] });
    w.recent.push(ms);
    w.sorted.splice(sortedIndex(w.sorted, ms), 0, ms);
    if (w.recent.length > WINDOW) w.sorted.splice(sortedIndex(w.sorted, w.recent.shift()!), 1);
  }

  /** Median of the recent intervals of `kind`, once there are enough. */
  median(kind: string): number | undefined {
    const sorted = this.intervals.get(kind)?.sorted;
    if (!sorted || sorted.length < MIN_SAMPLES) return undefined;
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }

  /** How long a worker may take for its next result of `kind`. */
  deadline(kind: string): number {
    const { stepTimeoutMs, stepTimeoutFloorMs, deadlineFactor } = this.opts;
    const median = this.median(kind);
    if (median === undefined) return stepTimeoutMs;
    return Math.round(Math.min(stepTimeoutMs, Math.max(stepTimeoutFloorMs, deadlineFactor * median)));
  }
}

/** The first index of `sorted` whose value is not below `x`. */
function sortedIndex(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
