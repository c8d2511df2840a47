// A one-line download progress bar (percent, MB, MB/s) redrawn in place with '\r'.
// It draws only on a terminal, so logs and pipes never collect partial lines.

export interface ProgressStream {
  readonly isTTY?: boolean;
  write(chunk: string): boolean;
}

export interface ProgressBarOptions {
  readonly label: string;
  /** Bar width in characters. */
  readonly width: number;
  /** Minimum time between redraws; the final state is always drawn by done(). */
  readonly intervalMs: number;
  readonly now: () => number;
}

export interface ProgressBar {
  update(received: number, total: number | undefined): void;
  /** Draws the final state and ends the line. */
  done(): void;
}

const DEFAULTS: ProgressBarOptions = { label: 'download', width: 30, intervalMs: 100, now: () => performance.now() };
const MB = 1024 * 1024;

/** The text of one bar, e.g. "download [#####-----]  50.0%  81.0/162.0 MB  12.3 MB/s". */
export function formatProgress(received: number, total: number | undefined, elapsedMs: number, opts: Partial<ProgressBarOptions> = {}): string {
  const { label, width } = { ...DEFAULTS, ...opts };
  const rate = elapsedMs > 0 ? received / MB / (elapsedMs / 1000) : 0;
  const speed = `${rate.toFixed(1)} MB/s`;
  if (total === undefined || total <= 0) return `${label} ${(received / MB).toFixed(1)} MB  ${speed}`;
  const fraction = Math.min(1, received / total);
  const filled = Math.round(fraction * width);
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const percent = `${(fraction * 100).toFixed(1)}%`.padStart(6);
  return `${label} [${bar}] ${percent}  ${(received / MB).toFixed(1)}/${(total / MB).toFixed(1)} MB  ${speed}`;
}

/** A bar on `stream`; every method is a no-op unless the stream is a TTY. */
export function createProgressBar(stream: ProgressStream, opts: Partial<ProgressBarOptions> = {}): ProgressBar {
  const o = { ...DEFAULTS, ...opts };
  const start = o.now();
  let lastDraw = -Infinity;
  let last: [number, number | undefined] | undefined;
  let drawn = false;
  const draw = (received: number, total: number | undefined, t: number): void => {
    stream.write(`\r${formatProgress(received, total, t - start, o)}\x1b[K`);
    lastDraw = t;
    drawn = true;
  };
  return {
    update(received, total) {
      if (stream.isTTY !== true) return;
      last = [received, total];
      const t = o.now();
      if (t - lastDraw >= o.intervalMs) draw(received, total, t);
    },
    done() {
      if (stream.isTTY !== true) return;
      if (last !== undefined) draw(last[0], last[1], o.now());
      if (drawn) stream.write('\n');
    },
  };
}
