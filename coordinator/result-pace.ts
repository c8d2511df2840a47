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
  private readonly intervals = new Map<string, number[]>();

  constructor(private readonly opts: PaceOptions) {}

  record(kind: string, ms: number): void {
    const list = this.intervals.get(kind) ?? [];
    list.push(ms);
    if (list.length > WINDOW) list.shift();
    this.intervals.set(kind, list);
  }

  /** Median of the recent intervals of `kind`, once there are enough. */
  median(kind: string): number | undefined {
    const list = this.intervals.get(kind);
    if (!list || list.length < MIN_SAMPLES) return undefined;
    const sorted = [...list].sort((a, b) => a - b);
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
