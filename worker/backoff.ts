// Reconnect delays: exponential with a cap, and jitter so that many workers that lost the
// same coordinator do not all knock at the same instant.

export interface BackoffOptions {
  readonly initialMs: number;
  readonly factor: number;
  readonly maxMs: number;
  /** Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter], then capped. */
  readonly jitter: number;
}

export const BACKOFF_DEFAULTS: BackoffOptions = { initialMs: 250, factor: 2, maxMs: 10_000, jitter: 0.2 };

/** Delay before reconnect attempt `attempt` (0-based); `random` in [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number): number {
  const base = Math.min(opts.maxMs, opts.initialMs * opts.factor ** attempt);
  const jittered = base * (1 - opts.jitter + 2 * opts.jitter * random());
  return Math.max(0, Math.min(opts.maxMs, Math.round(jittered)));
}
