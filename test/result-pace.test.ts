// The deadline for a worker's next result: --step-timeout until the fleet's pace is known,
// then factor x the recent median, clamped to [floor, --step-timeout], per kind of work.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ResultPace } from '../coordinator/result-pace.js';

describe('result pace', () => {
  it('derives the deadline from the recent median, between the floor and the ceiling', () => {
    const pace = new ResultPace({ stepTimeoutMs: 120_000, stepTimeoutFloorMs: 1_000, deadlineFactor: 10 });
    assert.equal(pace.deadline('gradients'), 120_000, 'nothing measured yet: the ceiling');
    for (const ms of [400, 500, 100_000]) pace.record('gradients', ms);
    assert.equal(pace.median('gradients'), 500, 'one outlier does not move the median');
    assert.equal(pace.deadline('gradients'), 5_000);
    assert.equal(pace.deadline('evaluate'), 120_000, 'each kind of work has its own pace');
    for (let i = 0; i < 40; i++) pace.record('gradients', 20);
    assert.equal(pace.deadline('gradients'), 1_000, 'never below the floor; old intervals age out');
    for (let i = 0; i < 40; i++) pace.record('gradients', 60_000);
    assert.equal(pace.deadline('gradients'), 120_000, 'never above the ceiling');
  });

  it('keeps the median of exactly the last 32 intervals, duplicates included', () => {
    const pace = new ResultPace({ stepTimeoutMs: 120_000, stepTimeoutFloorMs: 1_000, deadlineFactor: 10 });
    const seen: number[] = [];
    let x = 7;
    for (let i = 0; i < 300; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const ms = x % 50; // many repeats, so removals must take out one copy only
      pace.record('gradients', ms);
      seen.push(ms);
      const window = seen.slice(-32).sort((a, b) => a - b);
      const mid = window.length >> 1;
      const expected = window.length < 3 ? undefined : window.length % 2 === 1 ? window[mid] : (window[mid - 1]! + window[mid]!) / 2;
      assert.equal(pace.median('gradients'), expected, `after ${i + 1} intervals`);
    }
  });
});
