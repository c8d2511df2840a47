// What keeps the dashboard cheap for the run it watches, tested without a browser: the
// images/s curve stays within its number of points with rates that are images over seconds,
// and the workers table takes the pool's counters once per interval and at each epoch's end,
// not at every step.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RunMonitor } from '../coordinator/dashboard/run-monitor.js';
import type { StepPoint } from '../coordinator/dashboard/run-state.js';
import { StepSeries } from '../coordinator/dashboard/step-series.js';

const step = (globalStep: number, images: number, seconds: number): StepPoint => ({
  globalStep, epoch: 1, step: globalStep, stepsPerEpoch: 1_000_000, images, seconds, imagesPerSec: images / seconds, loss: 0,
});

describe('StepSeries', () => {
  it('keeps every step while they fit, and their own rates', () => {
    const s = new StepSeries(8);
    for (let g = 1; g <= 8; g++) s.add(step(g, 64, g / 100));
    const [xs, rates] = s.data();
    assert.deepEqual(xs, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(rates, [1, 2, 3, 4, 5, 6, 7, 8].map((g) => 64 / (g / 100)));
    assert.equal(s.steps, 8);
  });

  it('never holds more than maxPoints, and each point is its steps\' images over their seconds', () => {
    const max = 10;
    const s = new StepSeries(max);
    const all: StepPoint[] = [];
    for (let g = 1; g <= 1000; g++) {
      const p = step(g, 32 + (g % 3) * 16, 0.01 + (g % 7) * 0.003);
      all.push(p);
      s.add(p);
      assert.ok(s.length <= max, `${s.length} points after ${g} steps`);
    }
    const [xs, rates] = s.data();
    assert.ok(xs.length >= max / 2, `${xs.length} points`);
    assert.equal(xs.at(-1), 1000);
    // Buckets are consecutive runs of steps ending at each x: recompute each from the steps.
    let from = 0;
    xs.forEach((x, i) => {
      const bucket = all.slice(from, x);
      const rate = bucket.reduce((a, p) => a + p.images, 0) / bucket.reduce((a, p) => a + p.seconds, 0);
      assert.ok(Math.abs(rates[i]! - rate) < 1e-9 * rate, `point ${i}: ${rates[i]} vs ${rate}`);
      from = x;
    });
    assert.equal(from, 1000);
    assert.ok(xs.every((x, i) => i === 0 || x > xs[i - 1]!), 'x ascends');
  });

  it('goes back to where a rollback resumes, and starts again from a snapshot', () => {
    const s = new StepSeries(100);
    for (let g = 1; g <= 20; g++) s.add(step(g, 64, 0.01));
    s.add(step(15, 64, 0.02));
    const [xs, rates] = s.data();
    assert.deepEqual(xs, [...Array.from({ length: 14 }, (_, i) => i + 1), 15]);
    assert.equal(rates.at(-1), 64 / 0.02);
    s.reset([step(3, 10, 1), step(4, 20, 1)]);
    assert.deepEqual(s.data(), [[3, 4], [10, 20]]);
    assert.equal(s.steps, 2);
    assert.throws(() => new StepSeries(1), RangeError);
  });
});

describe('RunMonitor: the workers table per interval, not per step', () => {
  it('is due at the first step, then once per rateIntervalMs, and at the end of every epoch', () => {
    let now = 1000;
    const monitor = new RunMonitor({ rateIntervalMs: 1000, now: () => now });
    const at = (s: number): { step: number; stepsPerEpoch: number } => ({ step: s, stepsPerEpoch: 50 });
    assert.equal(monitor.liveWorkersDue(at(1)), true);
    monitor.liveWorkers([], 16);
    now += 999;
    assert.equal(monitor.liveWorkersDue(at(2)), false);
    assert.equal(monitor.liveWorkersDue(at(50)), true, 'the last step of an epoch');
    now += 1;
    assert.equal(monitor.liveWorkersDue(at(3)), true);
    monitor.liveWorkers([], 16);
    assert.equal(monitor.liveWorkersDue(at(4)), false);
  });
});
