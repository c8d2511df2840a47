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
});
