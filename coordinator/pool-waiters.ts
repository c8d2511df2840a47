// Waiting for workers: callers that wait until enough workers are ready, and the periodic
// "waiting for workers (have k, need m)" log while anything (a caller or a blocked round)
// lacks workers.
import type { Logger } from 'pino';
import { ErrorCode, FlockError } from '../shared/errors.js';

interface JoinWaiter {
  readonly n: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class JoinWaiters {
  private readonly waiters = new Set<JoinWaiter>();
  private waitLog: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly log: Logger,
    private readonly waitLogMs: number,
    private readonly minWorkers: number,
    private readonly have: () => number,
    /** Whether an open round has units no worker holds. */
    private readonly blocked: () => boolean,
  ) {}

  /** Resolves once at least `n` workers are ready; rejects if `signal` aborts or `close` is called. */
  wait(n: number, signal?: AbortSignal): Promise<void> {
    if (this.have() >= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        this.update();
        reject(new FlockError(ErrorCode.SHUTDOWN, `stopped while waiting for workers (have ${this.have()}, need ${n})`));
      };
      const waiter: JoinWaiter = {
        n,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
      this.update();
    });
  }

  /** Resolves the waiters that now have enough workers. */
  joined(): void {
    for (const waiter of [...this.waiters]) {
      if (this.have() >= waiter.n) {
        this.waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }

  /** Starts or stops the periodic log according to whether anything lacks workers. */
  update(): void {
    const need = this.needed();
    if (need === 0 || this.closed) {
      clearInterval(this.waitLog);
      this.waitLog = undefined;
      return;
    }
    if (this.waitLog) return;
    const say = (): void => {
      const n = this.needed();
      if (n > 0) this.log.info({ event: 'waiting', have: this.have(), need: n }, `waiting for workers (have ${this.have()}, need ${n})`);
    };
    say();
    this.waitLog = setInterval(say, this.waitLogMs);
  }

  /** Rejects every waiter with `err` and stops logging. */
  close(err: Error): void {
    this.closed = true;
    clearInterval(this.waitLog);
    this.waitLog = undefined;
    for (const w of this.waiters) w.reject(err);
    this.waiters.clear();
  }

  /** Workers needed before anything can proceed; 0 when nothing waits on workers. */
  private needed(): number {
    const have = this.have();
    let need = 0;
    for (const w of this.waiters) if (w.n > have) need = Math.max(need, w.n);
    if (this.blocked()) need = Math.max(need, this.minWorkers, 1);
    return need > have ? need : 0;
  }
}
