// Rejoining upstream after a lost connection, for the worker and the relay alike: each
// connection runs to its end; a lost one is retried after an exponential, jittered backoff
// (backoff.ts) that starts over whenever a connection got as far as the welcome; after
// `giveUpAfterMs` without one it gives up with an error that says so. Free of Node-only
// imports (the browser worker bundles it).
import type { Logger } from 'pino';
import type { Clock } from '../shared/clock.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { BACKOFF_DEFAULTS, backoffDelay, type BackoffOptions } from './backoff.js';
import type { LinkEnd } from './upstream-link.js';

export interface RejoinOptions {
  readonly url: string;
  /** Who is upstream, for messages: "the coordinator", "upstream". */
  readonly peer: string;
  readonly backoff: BackoffOptions;
  /** Give up after failing to (re)connect for this long. */
  readonly giveUpAfterMs: number;
}

export const REJOIN_DEFAULTS: Pick<RejoinOptions, 'backoff' | 'giveUpAfterMs'> = { backoff: BACKOFF_DEFAULTS, giveUpAfterMs: 5 * 60_000 };

export interface RejoinDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Uniform [0, 1) source for backoff jitter. */
  readonly random: () => number;
}

export class Rejoin {
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(private readonly opts: RejoinOptions, private readonly deps: RejoinDeps) {
    if (!Number.isSafeInteger(opts.giveUpAfterMs) || opts.giveUpAfterMs < 0) throw new FlockError(ErrorCode.BAD_OPTION, `giveUpAfterMs must be a non-negative integer (got ${opts.giveUpAfterMs})`);
  }

  /**
   * Runs `connect` until a connection ends as stopped (resolves with its reason) or `close()`
   * is called (resolves with `closedReason`); rejects when a connection fails for good or
   * upstream stayed out of reach for longer than `giveUpAfterMs`.
   */
  async run(connect: () => Promise<LinkEnd>, closedReason: string): Promise<string> {
    const { clock, logger: log } = this.deps;
    let attempt = 0;
    let lostSince = clock.now();
    for (;;) {
      if (this.closed) return closedReason;
      const end = await connect();
      if (end.kind === 'stopped') return end.reason;
      if (this.closed) return closedReason;
      if (end.welcomed) {
        attempt = 0;
        lostSince = clock.now();
      }
      const lostFor = clock.now() - lostSince;
      if (lostFor > this.opts.giveUpAfterMs) {
        throw new FlockError(ErrorCode.TIMEOUT, `could not reach ${this.opts.peer} at ${this.opts.url} for ${Math.round(lostFor / 1000)} s (last: ${end.reason}); giving up`);
      }
      const delayMs = backoffDelay(attempt++, this.opts.backoff, this.deps.random);
      const what = end.welcomed ? `connection to ${this.opts.peer} lost` : `cannot reach ${this.opts.peer}`;
      log.warn({ event: 'reconnecting', attempt, delayMs, reason: end.reason }, `${what} (${end.reason}); retrying in ${delayMs} ms`);
      await this.sleep(delayMs);
    }
  }

  /** Stops retrying; a backoff wait in progress ends at once. The caller closes the current connection. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
