// The run's Prometheus metrics (prom-client, on a registry of our own), fed by the run
// monitor's updates: flock_ names, base units (seconds, images, ratios).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RunMonitor } from './run-monitor.js';
import type { RunUpdate } from './run-state.js';

export interface RunMetrics {
  readonly registry: Registry;
  /** Stops following the monitor. */
  close(): void;
}

/** Step-time buckets in seconds: tens of milliseconds (tiny models) to a minute (stragglers). */
const STEP_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createRunMetrics(monitor: RunMonitor, opts: { defaultMetrics: boolean } = { defaultMetrics: true }): RunMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const steps = new Counter({ name: 'flock_steps_total', help: 'Training steps (SGD updates) completed by this process', registers });
  const images = new Counter({ name: 'flock_images_total', help: 'Training images processed', registers });
  const epoch = new Gauge({ name: 'flock_epoch', help: 'Epochs completed', registers });
  const trainLoss = new Gauge({ name: 'flock_train_loss', help: 'Mean training loss of the last completed epoch', registers });
  const trainAccuracy = new Gauge({ name: 'flock_train_accuracy', help: 'Training accuracy (ratio) of the last completed epoch', registers });
  const valLoss = new Gauge({ name: 'flock_validation_loss', help: 'Validation loss of the last completed epoch', registers });
  const valAccuracy = new Gauge({ name: 'flock_validation_accuracy', help: 'Validation accuracy (ratio) of the last completed epoch', registers });
  const workers = new Gauge({ name: 'flock_workers', help: 'Workers connected and ready', registers });
  const stepSeconds = new Histogram({ name: 'flock_step_duration_seconds', help: 'Wall time of one training step', buckets: STEP_BUCKETS, registers });
  const reassigned = new Counter({ name: 'flock_reassigned_microbatches_total', help: 'Micro-batches handed to another worker after theirs left', registers });
  const rejected = new Counter({ name: 'flock_rejected_frames_total', help: 'Connections closed for an invalid frame or protocol violation, by WebSocket close code', labelNames: ['code'] as const, registers });
  const training = new Gauge({ name: 'flock_training', help: '1 while the run is training, 0 otherwise', registers });
  // Verification (issue 12): read from the monitor's latest counts at each scrape.
  const verification = {
    audits: 'Micro-batches computed a second time by audit',
    validationChecks: 'Validation chunks computed a second time',
    guardFailures: 'Results that failed a guard and were recomputed',
    mismatches: 'Pairs of computations of one unit that disagreed',
    quarantines: 'Workers quarantined for results proven wrong',
    replayedSteps: 'Steps undone by rollbacks and computed again',
  } as const;
  const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  for (const [key, help] of Object.entries(verification) as [keyof typeof verification, string][]) {
    new Gauge({ name: `flock_verification_${snake(key)}_total`, help, registers, collect() { this.set(monitor.verificationCounts()[key]); } });
  }

  const onUpdate = (u: RunUpdate): void => {
    switch (u.type) {
      case 'step':
        steps.inc();
        images.inc(u.step.images);
        stepSeconds.observe(u.step.seconds);
        return;
      case 'epoch':
        epoch.set(u.epoch.epoch);
        trainLoss.set(u.epoch.trainLoss);
        trainAccuracy.set(u.epoch.trainAccuracy);
        valLoss.set(u.epoch.valLoss);
        valAccuracy.set(u.epoch.valAccuracy);
        return;
      case 'workers':
        workers.set(u.workers.filter((w) => w.state === 'ready').length);
        return;
      case 'event':
        if (u.event.kind === 'left' && u.event.reassigned) reassigned.inc(u.event.reassigned);
        if (u.event.kind === 'rejected') rejected.inc({ code: String(u.event.code ?? 'unknown') });
        return;
      case 'status':
        training.set(u.status === 'training' ? 1 : 0);
        return;
      case 'config':
      case 'steps':
        return;
    }
  };
  monitor.on('update', onUpdate);
  return { registry, close: () => monitor.off('update', onUpdate) };
}
