import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MODEL_NAMES } from '../shared/models/layers.js';
import { initialState, modelSpec } from '../shared/models/spec.js';

describe('models', () => {
  it("have the recipe's parameter counts", () => {
    const counts = Object.fromEntries(MODEL_NAMES.map((m) => [m, modelSpec(m).parameterCount]));
    // Net 18,090 and NetWidth 38,386 as in the book; NetDropout adds none; NetBatchNorm adds γ and β (2·(32+16)).
    assert.deepEqual(counts, { net: 18090, 'net-width': 38386, 'net-dropout': 38386, 'net-batchnorm': 38482 });
  });

  it('initialise like PyTorch: uniform in ±1/sqrt(fan_in), batch norm γ=1 β=0, running mean 0 var 1', () => {
    const model = modelSpec('net-batchnorm');
    const state = initialState(model, 7);
    model.params.forEach((p, i) => {
      const values = state.params[i]!;
      assert.equal(values.length, p.size);
      if (p.init === 'pytorch-uniform') {
        const bound = 1 / Math.sqrt(p.fanIn);
        assert.ok(values.every((v) => Math.abs(v) <= bound), `${p.name} within ±${bound}`);
        const spread = Math.max(...values) - Math.min(...values);
        if (values.length >= 16) assert.ok(spread > bound, `${p.name} spread over the range`);
      } else {
        assert.ok(values.every((v) => v === (p.init === 'ones' ? 1 : 0)), p.name);
      }
    });
    assert.deepEqual(model.buffers.map((b) => b.name), ['conv1_batchnorm.running_mean', 'conv1_batchnorm.running_var', 'conv2_batchnorm.running_mean', 'conv2_batchnorm.running_var']);
    assert.ok(state.buffers[0]!.every((v) => v === 0) && state.buffers[1]!.every((v) => v === 1));
  });

  it('initialise deterministically from the seed', () => {
    const model = modelSpec('net');
    assert.deepEqual(initialState(model, 3), initialState(model, 3));
    assert.notDeepEqual(initialState(model, 3).params[0], initialState(model, 4).params[0]);
  });
});
