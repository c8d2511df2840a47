// Summarised warnings for refused connections: the first refusal is logged at once, the
// ones that follow within an interval as one record with a count, so a client hammering the
// port cannot flood the (synchronous) log.
import type { Logger } from 'pino';

/** Distinct remote addresses kept per summary. */
const MAX_REMOTES = 10;

export class RejectLog {
  private count = 0;
  private remotes = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly event: string,
    private readonly what: string,
  ) {}

  note(remote: string | undefined): void {
    this.count++;
    if (this.remotes.size < MAX_REMOTES) this.remotes.add(remote ?? '?');
    if (this.timer) return;
    this.flush();
    this.timer = setInterval(() => {
      if (this.count === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      } else {
        this.flush();
      }
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Logs what was counted since the last record, if anything. */
  flush(): void {
    if (this.count === 0) return;
    const remotes = [...this.remotes];
    this.log.warn({ event: this.event, count: this.count, remotes, intervalMs: this.intervalMs },
      `${this.what}: ${this.count} connection${this.count === 1 ? '' : 's'} from ${remotes.join(', ')}${this.remotes.size >= MAX_REMOTES ? ', ...' : ''}`);
    this.count = 0;
    this.remotes = new Set();
  }

  /** Logs what is left and stops the timer. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }
}
