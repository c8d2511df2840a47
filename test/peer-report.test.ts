import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { machineName, median, parseTorchOutput, peerMarkdown, peerRows, summarize, type Comparison } from '../scripts/peer-report.js';

const line = (fields: Record<string, unknown>): string =>
  JSON.stringify({ model: 'net', parameters: 18090, threads: 1, batch: 64, steps: 30, images_per_sec: 2100.5, images_per_cpu_sec: 2200, torch: '1.13.0a0', ...fields });

describe('torch_bench.py output', () => {
  it('reads one result per JSON line, skipping blank lines', () => {
    const out = `${line({})}\n\n${line({ model: 'net-batchnorm', parameters: 38482, images_per_sec: 900, images_per_cpu_sec: null })}\n`;
    assert.deepEqual(parseTorchOutput(out), [
      { model: 'net', parameters: 18090, threads: 1, batch: 64, steps: 30, imagesPerSec: 2100.5, imagesPerCpuSec: 2200, torchVersion: '1.13.0a0' },
      { model: 'net-batchnorm', parameters: 38482, threads: 1, batch: 64, steps: 30, imagesPerSec: 900, imagesPerCpuSec: undefined, torchVersion: '1.13.0a0' },
    ]);
  });

  it('rejects a line that is not JSON, naming it', () => {
    assert.throws(() => parseTorchOutput(`${line({})}\nWarning: something\n`), /line 2 is not JSON: Warning/);
  });

  it('rejects a result without a positive rate or parameter count', () => {
    assert.throws(() => parseTorchOutput(line({ images_per_sec: 0 })), /line 1 lacks/);
    assert.throws(() => parseTorchOutput(line({ images_per_sec: 'fast' })), /line 1 lacks/);
    assert.throws(() => parseTorchOutput(line({ parameters: undefined })), /line 1 lacks/);
    assert.throws(() => parseTorchOutput('[1, 2]'), /line 1 lacks/);
  });

  it('passes on the error the script reports', () => {
    assert.throws(() => parseTorchOutput('{"error": "unknown model \'foo\'"}'), /^Error: torch_bench.py: unknown model 'foo'$/);
  });
});

describe('peer comparison', () => {
  it('takes the median of odd and even counts', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.throws(() => median([]), RangeError);
  });

  const comparison: Comparison = {
    model: 'net',
    flockSetup: '1 process',
    torchSetup: '1 thread',
    // Round 2 ran on a busier machine: both sides slower, ratio about the same.
    rounds: [{ flock: 1000, torch: 2000 }, { flock: 500, torch: 1100 }, { flock: 1100, torch: 2000 }],
  };

  it('reports the median of the per-round ratios, not the ratio of the medians', () => {
    const s = summarize(comparison);
    assert.equal(s.flock, 1000);
    assert.equal(s.torch, 2000);
    assert.deepEqual(s.ratios.map((r) => Number(r.toFixed(4))), [0.5, 0.4545, 0.55]);
    assert.equal(s.ratio, 0.5);
  });

  it('formats rows and a Markdown table for the README', () => {
    assert.deepEqual(peerRows([comparison]), [['net', '1 process', '1,000', '1 thread', '2,000', '0.50×', '0.50 0.45 0.55']]);
    assert.deepEqual(peerMarkdown([comparison]).split('\n'), [
      '| model | Flock | img/s | PyTorch | img/s | Flock/PyTorch | per round |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      '| `net` | 1 process | 1,000 | 1 thread | 2,000 | **0.50×** | 0.50 0.45 0.55 |',
    ]);
  });

  it('names the machine from /proc/cpuinfo, else from the fallback', () => {
    assert.equal(machineName('processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: x\n', 'other', 2), 'AMD EPYC, 2 cores');
    assert.equal(machineName('', 'Apple M2', 1), 'Apple M2, 1 core');
    assert.equal(machineName('', '', 4), 'unknown CPU, 4 cores');
  });
});
