// The terminal's live status line (like tqdm): step k/N of the epoch, images/s, workers and
// the ETA of the epoch and of the run, redrawn in place with '\r'. Log lines go through
// stream(), which clears the status line, writes the line and draws the status again, so
// the two never mix. Used only for pretty output on a terminal, never with JSON lines.
import { Writable } from 'node:stream';
import type { RunMonitor } from './dashboard/run-monitor.js';
import type { RunUpdate } from './dashboard/run-state.js';

export interface StatusOutput {
  write(chunk: string): boolean;
}

export interface StatusLineOptions {
  /** Minimum time between redraws. */
  readonly intervalMs: number;
  readonly width: number;
  readonly now: () => number;
}

const DEFAULTS: StatusLineOptions = { intervalMs: 200, width: 20, now: () => performance.now() };

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export class StatusLine {
  private readonly opts: StatusLineOptions;
  private text = '';
  private shown = false;
  private lastDraw = -Infinity;
  private readonly onUpdate = (u: RunUpdate): void => this.update(u);

  constructor(private readonly out: StatusOutput, private readonly monitor: RunMonitor, opts: Partial<StatusLineOptions> = {}) {
    this.opts = { ...DEFAULTS, ...opts };
    monitor.on('update', this.onUpdate);
  }

  /** Where log lines go: each is written above the status line. */
  stream(): Writable {
    return new Writable({
      write: (chunk: Buffer | string, _enc, done) => {
        this.writeAbove(String(chunk));
        done();
      },
    });
  }

  /**
   * Writes `text` (whole lines) to `to` (this terminal's stdout, or its stderr) with the status
   * line cleared first and drawn again after, so the two never share a line.
   */
  writeAbove(text: string, to: StatusOutput = this.out): void {
    this.clear();
    to.write(text);
    this.draw();
  }

  /** Removes the line for good (end of run). */
  close(): void {
    this.monitor.off('update', this.onUpdate);
    this.clear();
    this.text = '';
  }

  /** The line for the monitor's state now, or '' before the first step. */
  format(): string {
    const s = this.monitor.summary();
    const recent = this.monitor.lastSteps(20);
    const step = recent.at(-1);
    if (!step || s.status !== 'training') return '';
    const epochs = typeof s.config?.epochs === 'number' ? `/${s.config.epochs}` : '';
    const filled = Math.round((step.step / step.stepsPerEpoch) * this.opts.width);
    const bar = '#'.repeat(filled) + '-'.repeat(this.opts.width - filled);
    const seconds = recent.reduce((a, p) => a + p.seconds, 0);
    const rate = seconds > 0 ? recent.reduce((a, p) => a + p.images, 0) / seconds : 0;
    const eta = s.eta ? `  ETA epoch ${formatDuration(s.eta.epochSeconds)}, run ${formatDuration(s.eta.runSeconds)}` : '';
    return `epoch ${step.epoch}${epochs} [${bar}] step ${step.step}/${step.stepsPerEpoch}  ${rate.toFixed(0)} img/s  ${this.monitor.readyWorkers()} workers${eta}`;
  }

  private update(u: RunUpdate): void {
    if (u.type === 'status' && u.status !== 'training') {
      this.clear();
      this.text = '';
      return;
    }
    if (u.type !== 'step') return;
    const t = this.opts.now();
    if (t - this.lastDraw < this.opts.intervalMs) return;
    this.lastDraw = t;
    this.text = this.format();
    this.draw();
  }

  private draw(): void {
    if (this.text === '') return;
    this.out.write(`\r${this.text}\x1b[K`);
    this.shown = true;
  }

  private clear(): void {
    if (!this.shown) return;
    this.out.write('\r\x1b[K');
    this.shown = false;
  }
}
