// What the dashboard, /metrics and the status line know about a run, as plain data shared
// with the browser bundle (dashboard/client imports these types).
import type { EpochMetrics } from '../metrics.js';

/** The epoch log's figures the page draws (the rest of EpochMetrics is timing detail). */
export type EpochPoint = Pick<EpochMetrics,
  'epoch' | 'steps' | 'trainLoss' | 'trainAccuracy' | 'valLoss' | 'valAccuracy' | 'imagesPerSec' | 'workers' | 'seconds'>;

export interface StepPoint {
  readonly globalStep: number;
  /** 1-based epoch the step belongs to. */
  readonly epoch: number;
  /** 1-based position of the step in its epoch. */
  readonly step: number;
  readonly stepsPerEpoch: number;
  /** Training images in the step (the global batch). */
  readonly images: number;
  readonly seconds: number;
  readonly imagesPerSec: number;
  readonly loss: number;
  /** Verification counts so far (issue 12): audits, guard failures, quarantines, replayed steps. */
  readonly verification?: Readonly<Record<string, number>>;
}

export type WorkerState = 'ready' | 'gone';

export interface WorkerRow {
  readonly id: number;
  readonly name: string;
  readonly backend: string;
  /** The device its backend computes on (WebGPU adapter, CPU model); '' when unknown. */
  readonly adapter: string;
  /** Results returned: training micro-batches and validation chunks. */
  readonly unitsDone: number;
  readonly imagesPerSec: number;
  /**
   * Mean per training micro-batch, over the connection's life: the compute time the worker
   * reports, and the rest of the time from assignment (or its previous result) to the
   * result's arrival here (sending weights and samples, the result's way back, queueing).
   */
  readonly computeMs: number;
  readonly commMs: number;
  /** Wall-clock time (ms since 1970) of the last result or assignment. */
  readonly lastSeen: number;
  readonly state: WorkerState;
  readonly leftReason?: string;
}

export interface RunEvent {
  /** Wall-clock ms since 1970. */
  readonly time: number;
  readonly kind: 'joined' | 'left' | 'checkpoint' | 'rejected' | 'epoch' | 'done' | 'stopped' | 'info';
  readonly text: string;
  readonly code?: number | string;
  readonly reassigned?: number;
}

export type RunStatus = 'starting' | 'waiting' | 'training' | 'done' | 'stopped';

export interface Eta {
  /** Seconds left in the current epoch's training steps. */
  readonly epochSeconds: number;
  /** Seconds left in the run (training steps only). */
  readonly runSeconds: number;
}

export interface RunSnapshot {
  readonly label: string;
  readonly status: RunStatus;
  readonly config: Readonly<Record<string, unknown>> | undefined;
  readonly epochs: readonly EpochPoint[];
  readonly steps: readonly StepPoint[];
  readonly workers: readonly WorkerRow[];
  readonly events: readonly RunEvent[];
  readonly eta: Eta | undefined;
  readonly finalAccuracy: number | undefined;
  /** Finished runs overlaid for comparison (`coordinator dashboard --log a --log b`). */
  readonly others?: readonly { readonly label: string; readonly epochs: readonly EpochPoint[] }[];
}

/** One change, as sent over the event stream. */
export type RunUpdate =
  | { readonly type: 'status'; readonly status: RunStatus; readonly finalAccuracy?: number }
  | { readonly type: 'config'; readonly config: Readonly<Record<string, unknown>> }
  | { readonly type: 'epoch'; readonly epoch: EpochPoint }
  | { readonly type: 'step'; readonly step: StepPoint; readonly eta: Eta | undefined }
  /** Several steps at once: what the event stream sends (a few times a second at most). */
  | { readonly type: 'steps'; readonly steps: readonly StepPoint[]; readonly eta: Eta | undefined }
  | { readonly type: 'workers'; readonly workers: readonly WorkerRow[] }
  | { readonly type: 'event'; readonly event: RunEvent };

/** The updates applyUpdate takes: steps go to each side's own bounded series (the monitor's list, the page's StepSeries). */
export type SnapshotUpdate = Exclude<RunUpdate, { readonly type: 'step' } | { readonly type: 'steps' }>;

/** Applies an update to a snapshot (the browser and the log replay use the same rules). */
export function applyUpdate(s: RunSnapshot, u: SnapshotUpdate, maxEvents: number): RunSnapshot {
  switch (u.type) {
    case 'status':
      return { ...s, status: u.status, finalAccuracy: u.finalAccuracy ?? s.finalAccuracy };
    case 'config':
      return { ...s, config: u.config };
    case 'epoch':
      return { ...s, epochs: [...s.epochs.filter((e) => e.epoch !== u.epoch.epoch), u.epoch] };
    case 'workers':
      return { ...s, workers: u.workers };
    case 'event':
      return { ...s, events: [...s.events, u.event].slice(-maxEvents) };
  }
}

export const emptySnapshot = (label: string): RunSnapshot => ({
  label, status: 'starting', config: undefined, epochs: [], steps: [], workers: [], events: [], eta: undefined, finalAccuracy: undefined,
});
