// Follows a run from its log records (live through the logger's tap, or replayed from a
// finished JSON log), the trainer's per-step progress and the pool's worker counters, and
// turns them into one snapshot plus a stream of updates for the page, /metrics and the
// terminal's status line.
import { EventEmitter } from 'node:events';
import { applyUpdate, emptySnapshot, type Eta, type EpochPoint, type RunEvent, type RunSnapshot, type RunUpdate, type StepPoint, type WorkerRow } from './run-state.js';

/** What the trainer reports after each step. */
import { NO_COUNTS, type VerificationCounters } from '../verifier.js';

export interface StepProgress {
  readonly epoch: number;
  readonly step: number;
  readonly stepsPerEpoch: number;
  readonly globalStep: number;
  readonly images: number;
  /** Wall time of the step. */
  readonly seconds: number;
  /** Mean training loss of the step's batch. */
  readonly loss: number;
  /** Verification counts so far (issue 12), when results are verified. */
  readonly verification?: VerificationCounters;
}

/** A ready worker's counters, as the pool sees them now. */
export interface LiveWorker {
  readonly id: number;
  readonly name: string;
  readonly backend: string;
  readonly adapter: string;
  readonly results: number;
  /** Milliseconds since its last result or assignment. */
  readonly idleMs: number;
  /** Training micro-batches returned, their reported compute time and their time from assignment to arrival. */
  readonly train: { readonly results: number; readonly computeMs: number; readonly elapsedMs: number };
}

export interface MonitorOptions {
  readonly label: string;
  /** Steps kept for the images/s curve. */
  readonly maxSteps: number;
  readonly maxEvents: number;
  /** Steps averaged for the ETA. */
  readonly etaWindow: number;
  /** Minimum time between two per-worker rate measurements, and between two workers-table updates within an epoch. */
  readonly rateIntervalMs: number;
  /** Wall clock, ms since 1970 (times shown to people). */
  readonly now: () => number;
}

export const MONITOR_DEFAULTS: MonitorOptions = { label: 'run', maxSteps: 5000, maxEvents: 500, etaWindow: 20, rateIntervalMs: 1000, now: () => Date.now() };

type LogRecord = Record<string, unknown>;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const LOG_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'event']);

export class RunMonitor extends EventEmitter<{ update: [RunUpdate] }> {
  private readonly opts: MonitorOptions;
  /** Everything but the steps, which are kept apart so that a step costs O(1). */
  private state: RunSnapshot;
  /** The recent steps; trimmed to maxSteps only when twice as long (amortised O(1) per step). */
  private steps: StepPoint[] = [];
  private readonly recentStepSeconds: number[] = [];
  private recentSecondsSum = 0;
  private readonly rates = new Map<number, { results: number; at: number; rate: number }>();
  private verification: VerificationCounters = NO_COUNTS;
  private workersUpdatedAt = -Infinity;

  constructor(opts: Partial<MonitorOptions> = {}) {
    super();
    this.opts = { ...MONITOR_DEFAULTS, ...opts };
    this.state = emptySnapshot(this.opts.label);
  }

  /** The whole state, steps included (O(steps): for a new page or a replayed log, not per step). */
  snapshot(): RunSnapshot {
    return { ...this.state, steps: this.steps.slice(-this.opts.maxSteps) };
  }

  /** The state without its steps (O(1)). */
  summary(): RunSnapshot {
    return this.state;
  }

  /** The last `n` steps. */
  lastSteps(n: number): readonly StepPoint[] {
    return this.steps.slice(-n);
  }

  /** Overlays other (finished) runs' epoch curves on this one's. */
  compareWith(runs: readonly RunSnapshot[]): void {
    this.state = { ...this.state, others: runs.map((r) => ({ label: r.label, epochs: r.epochs })) };
  }

  /** Workers connected now. */
  readyWorkers(): number {
    return this.state.workers.filter((w) => w.state === 'ready').length;
  }

  /** One JSON log line (the logger's tap); lines that are not JSON objects are ignored. */
  readonly ingestLine = (line: string): void => {
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      return;
    }
    if (record !== null && typeof record === 'object' && !Array.isArray(record)) this.ingest(record as LogRecord);
  };

  /** One log record of the coordinator. */
  ingest(r: LogRecord): void {
    if (r.name !== undefined && r.name !== 'coordinator') return;
    const time = num(r.time) ?? this.opts.now();
    const event = (kind: RunEvent['kind'], text: string, extra: Partial<RunEvent> = {}): void => this.apply({ type: 'event', event: { time, kind, text, ...extra } });
    switch (r.event) {
      case 'config':
        this.apply({ type: 'config', config: Object.fromEntries(Object.entries(r).filter(([k]) => !LOG_FIELDS.has(k))) });
        return;
      case 'waiting':
        if (this.state.status === 'starting') this.apply({ type: 'status', status: 'waiting' });
        return;
      case 'worker_joined': {
        const id = num(r.workerId) ?? -1;
        const row: WorkerRow = { id, name: str(r.workerName), backend: str(r.backend), adapter: str(r.adapter), unitsDone: 0, imagesPerSec: 0, computeMs: 0, commMs: 0, lastSeen: time, state: 'ready' };
        this.apply({ type: 'workers', workers: [...this.state.workers.filter((w) => w.id !== id), row] });
        event('joined', `${row.name} joined (${row.backend})`);
        return;
      }
      case 'worker_left': {
        const id = num(r.workerId) ?? -1;
        const reason = str(r.reason);
        const reassigned = Array.isArray(r.reassigned) ? r.reassigned.length : 0;
        this.apply({ type: 'workers', workers: this.state.workers.map((w) => (w.id === id ? { ...w, state: 'gone', leftReason: reason, imagesPerSec: 0 } : w)) });
        event('left', `${str(r.workerName)} left: ${reason}${reassigned > 0 ? `; ${reassigned} micro-batches reassigned` : ''}`, { reassigned });
        return;
      }
      case 'worker_rejected': {
        const code = typeof r.code === 'number' ? r.code : str(r.wsError) || 'unknown';
        event('rejected', `connection ${num(r.workerId) ?? '?'} rejected (close code ${code}): ${str(r.err)}`, { code });
        return;
      }
      case 'quarantined':
        event('info', `${str(r.workerName)} quarantined at step ${num(r.step) ?? '?'}: ${str(r.why)} (settled by ${str(r.arbiter)})`);
        return;
      case 'rollback':
        event('info', `rolled back from step ${num(r.fromStep) ?? '?'} to step ${num(r.toStep) ?? '?'}: ${str(r.reason)}`);
        return;
      case 'checkpoint':
        event('checkpoint', `checkpoint at step ${num(r.globalStep) ?? '?'}: ${str(r.file)}`);
        return;
      case 'epoch': {
        const point = toEpochPoint(r);
        if (!point) return;
        this.apply({ type: 'epoch', epoch: point });
        if (this.state.status !== 'training') this.apply({ type: 'status', status: 'training' });
        event('epoch', `epoch ${point.epoch}: val acc ${point.valAccuracy.toFixed(4)}, ${point.imagesPerSec.toFixed(0)} img/s`);
        return;
      }
      case 'done':
        this.apply({ type: 'status', status: 'done', finalAccuracy: num(r.valAccuracy) });
        event('done', `training complete: validation accuracy ${num(r.valAccuracy)?.toFixed(4) ?? '?'}`);
        return;
      case 'stopped':
        this.apply({ type: 'status', status: 'stopped' });
        event('stopped', 'stopped before the end (continue with --resume)');
        return;
      default:
        return;
    }
  }

  /** The trainer finished a step. */
  /** The latest verification counts (audits, guard failures, quarantines, replayed steps). */
  verificationCounts(): VerificationCounters {
    return this.verification;
  }

  step(p: StepProgress): void {
    if (p.verification) this.verification = p.verification;
    if (this.state.status !== 'training') this.apply({ type: 'status', status: 'training' });
    this.recentStepSeconds.push(p.seconds);
    this.recentSecondsSum += p.seconds;
    if (this.recentStepSeconds.length > this.opts.etaWindow) this.recentSecondsSum -= this.recentStepSeconds.shift()!;
    const point: StepPoint = {
      globalStep: p.globalStep, epoch: p.epoch, step: p.step, stepsPerEpoch: p.stepsPerEpoch, images: p.images,
      seconds: p.seconds, imagesPerSec: p.seconds > 0 ? p.images / p.seconds : 0, loss: p.loss,
      ...(p.verification ? { verification: { ...p.verification } } : {}),
    };
    this.apply({ type: 'step', step: point, eta: this.eta(p) });
  }

  /**
   * Whether the workers table is due for the pool's counters after step `p`: once per
   * rateIntervalMs, and at the end of each epoch (exact figures there), so that a step costs
   * O(1) and the table O(workers) a second, not O(workers) a step.
   */
  liveWorkersDue(p: Pick<StepProgress, 'step' | 'stepsPerEpoch'>): boolean {
    return p.step === p.stepsPerEpoch || this.opts.now() - this.workersUpdatedAt >= this.opts.rateIntervalMs;
  }

  /** The pool's counters of its ready workers; `imagesPerUnit` turns results into images. */
  liveWorkers(live: readonly LiveWorker[], imagesPerUnit: number): void {
    const now = this.opts.now();
    this.workersUpdatedAt = now;
    const byId = new Map(live.map((w) => [w.id, w]));
    const rows = this.state.workers.map((w): WorkerRow => {
      const l = byId.get(w.id);
      if (!l || w.state === 'gone') return w;
      const prev = this.rates.get(w.id);
      let rate = prev?.rate ?? 0;
      if (!prev) this.rates.set(w.id, { results: l.results, at: now, rate: 0 });
      else if (now - prev.at >= this.opts.rateIntervalMs) {
        rate = ((l.results - prev.results) * imagesPerUnit) / ((now - prev.at) / 1000);
        this.rates.set(w.id, { results: l.results, at: now, rate });
      }
      const n = l.train.results;
      const computeMs = n > 0 ? l.train.computeMs / n : 0;
      const commMs = n > 0 ? Math.max(0, (l.train.elapsedMs - l.train.computeMs) / n) : 0;
      return { ...w, name: l.name, backend: l.backend, adapter: l.adapter, unitsDone: l.results, imagesPerSec: rate, computeMs, commMs, lastSeen: now - l.idleMs };
    });
    this.apply({ type: 'workers', workers: rows });
  }

  private eta(p: StepProgress): Eta | undefined {
    const epochs = num(this.state.config?.epochs);
    if (this.recentStepSeconds.length === 0 || epochs === undefined) return undefined;
    const mean = this.recentSecondsSum / this.recentStepSeconds.length;
    const epochSeconds = (p.stepsPerEpoch - p.step) * mean;
    return { epochSeconds, runSeconds: epochSeconds + Math.max(0, epochs - p.epoch) * p.stepsPerEpoch * mean };
  }

  /** The monitor makes every update but 'steps' (the batches the HTTP stream sends pages). */
  private apply(u: Exclude<RunUpdate, { readonly type: 'steps' }>): void {
    if (u.type === 'step') {
      this.steps.push(u.step);
      if (this.steps.length >= 2 * this.opts.maxSteps) this.steps = this.steps.slice(-this.opts.maxSteps);
      if (this.state.eta !== u.eta) this.state = { ...this.state, eta: u.eta };
    } else {
      this.state = applyUpdate(this.state, u, this.opts.maxEvents);
    }
    this.emit('update', u);
  }
}

function toEpochPoint(r: LogRecord): EpochPoint | undefined {
  const keys = ['epoch', 'steps', 'trainLoss', 'trainAccuracy', 'valLoss', 'valAccuracy', 'imagesPerSec', 'workers', 'seconds'] as const;
  const values = keys.map((k) => num(r[k]));
  if (values.some((v) => v === undefined)) return undefined;
  return Object.fromEntries(keys.map((k, i) => [k, values[i]!])) as unknown as EpochPoint;
}
