// Time as a dependency, so tests and benchmarks can substitute their own.
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };
