// A pino logger that keeps every record, for tests that wait on log events instead of
// sleeping. Used for the coordinator's in-process logs and for child processes' JSON lines.
import pino, { type Logger } from 'pino';

export interface LogEvent {
  readonly event?: string;
  readonly [key: string]: unknown;
}

/** Keeps every log record; `next` waits for one, `on` sees each as it is written (synchronously). */
export class LogRecorder {
  readonly events: LogEvent[] = [];
  private readonly waiters = new Set<{ pred: (e: LogEvent) => boolean; resolve: (e: LogEvent) => void }>();
  private readonly listeners = new Set<(e: LogEvent) => void>();

  /** A pino logger at `level` whose records land here. */
  logger(level: pino.Level = 'debug'): Logger {
    return pino({ level }, { write: (line: string) => this.push(JSON.parse(line) as LogEvent) });
  }

  push(e: LogEvent): void {
    this.events.push(e);
    for (const l of [...this.listeners]) l(e);
    for (const w of [...this.waiters]) {
      if (w.pred(e)) {
        this.waiters.delete(w);
        w.resolve(e);
      }
    }
  }

  /** The first record (already written or still to come) that matches. */
  next(pred: (e: LogEvent) => boolean): Promise<LogEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.add({ pred, resolve }));
  }

  /** Calls `f` with every later record, inside the logging call; returns an unsubscribe. */
  on(f: (e: LogEvent) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  filter(pred: (e: LogEvent) => boolean): LogEvent[] {
    return this.events.filter(pred);
  }
}
