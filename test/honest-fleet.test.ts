// Issue 12: an honest fleet is never quarantined. Real worker processes on every backend
// that loads here (wasm, cpu, and webgpu: required under CI=true, where .ci/run installs
// software Vulkan) compute 1,000 audited gradient micro-batches at audit rate 1; every audit
// is counted, none disagrees, no one is quarantined, and the audit pairs cover every pair of
// backends: same backend compared bit for bit, different backends within the tolerance. The
// largest cross-backend difference seen is printed (t.diagnostic) next to the tolerance.
//
// The cpu backend is by far the slowest here (~120 ms of CPU per one-image gradient of `net`
// on this 2-vCPU VM, against ~6 on wasm and ~30 on webgpu over lavapipe), so it takes the
// smaller share: 920 steps on the wasm and webgpu workers first (2 micro-batches a step,
// the audit's second computation rotating over the other workers), then the cpu workers join
// for 80 steps in which every worker but the last computes one micro-batch (so a cpu worker
// is audited, by the other cpu worker among others, as well as auditing).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CROSS_BACKEND_TOLERANCE } from '../coordinator/agreement.js';
import { Arbiter } from '../coordinator/arbiter.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import { findWebgpuAdapter } from '../shared/backends/webgpu.js';
import { systemClock } from '../shared/clock.js';
import { errorMessage } from '../shared/errors.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { validationChunks } from '../shared/training/schedule.js';
import { reap, spawnWorker, type Proc } from './child-procs.js';
import { LogRecorder, type LogEvent } from './log-recorder.js';
import { useTrainingData } from './reference-run.js';

const FAST_STEPS = 920;
const CPU_STEPS = 80;
/** New weights (another initialisation) every this many steps, so the audits see several. */
const STEPS_PER_VERSION = 100;
const VALIDATION_CHUNKS = 100;

describe('an honest mixed fleet is never quarantined', () => {
  const data = useTrainingData('flock-honest-', { trainPerFile: 100, testCount: 200, seed: 41 });
  let runtime: ModelRuntime | undefined;
  after(() => runtime?.dispose());

  it(`${FAST_STEPS + CPU_STEPS} audited gradient micro-batches on wasm, cpu and webgpu workers: no mismatch, no quarantine, every backend pair compared`, async (t) => {
    const webgpu = await findWebgpuAdapter().then(() => true, (err: unknown) => {
      // CI must exercise webgpu (.ci/run installs lavapipe): without an adapter this fails there.
      if (process.env.CI === 'true') assert.fail(`CI=true but no WebGPU adapter: ${errorMessage(err)}`);
      t.diagnostic(`no WebGPU adapter, the fleet is wasm + cpu only (${errorMessage(err).split('\n')[0] ?? ''})`);
      return false;
    });
    const config = resolveTrainConfig({ model: 'net', epochs: 1, batchSize: 2, microBatch: 1, lr: 0.05, seed: 5 }, 2);
    const model = modelSpec(config.model);
    const { train, validation, backend } = data;
    runtime = new ModelRuntime(backend, model);
    const rec = new LogRecorder();
    const quarantine = new Quarantine();
    const p = await WorkerPool.listen({ port: 0 }, {
      logger: rec.logger('debug'), clock: systemClock, model, config, train, validation,
      verify: { arbiter: new Arbiter(runtime, { train, validation }, config.seed, backend.name), quarantine, auditRate: 1, auditSeed: 11 },
    });
    const procs: Proc[] = [];
    const join = async (names: readonly string[]): Promise<void> => {
      for (const name of names) procs.push(spawnWorker(p.url, name, { backend: name.split('-')[0]! }));
      await p.waitForWorkers(procs.length);
    };
    try {
      // Joined in this order (ids follow it): a step's micro-batches go to the first workers,
      // the audit's second computation to the others in turn.
      await join(['wasm-1']);
      if (webgpu) await join(['webgpu-1']);
      await join(webgpu ? ['wasm-2', 'webgpu-2'] : ['wasm-2']);
      let step = 0;
      let sample = 0;
      const steps = async (count: number, units: number): Promise<void> => {
        for (const end = step + count; step < end; step++) {
          const microBatches: MicroBatch[] = Array.from({ length: units }, (_, id) => ({ id, indices: Uint32Array.of(sample++ % train.count) }));
          const version = Math.floor(step / STEPS_PER_VERSION);
          await p.gradients({ epoch: 0, globalStep: step, microBatches }, { version, state: initialState(model, 100 + version) });
        }
      };
      const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
        const started = performance.now();
        const out = await f();
        t.diagnostic(`${what}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
        return out;
      };
      await timed(`${FAST_STEPS} steps on wasm${webgpu ? ' and webgpu' : ''}`, () => steps(FAST_STEPS, 2));
      await timed('cpu workers joining', () => join(['cpu-1', 'cpu-2']));
      await timed(`${CPU_STEPS} steps with cpu workers`, () => steps(CPU_STEPS, procs.length - 1));
      const chunks = validationChunks(validation.count, 1).slice(0, VALIDATION_CHUNKS);
      await timed(`${VALIDATION_CHUNKS} validation chunks`, () => p.evaluate('validation', chunks, { version: step, state: initialState(model, 999) }));

      const v = p.verificationCounters();
      const mismatches = rec.filter((e) => e.event === 'mismatch' || e.event === 'guard_failed' || e.event === 'quarantined');
      assert.deepEqual(mismatches, [], 'no mismatch, guard failure or quarantine');
      assert.equal(v.audits, FAST_STEPS + CPU_STEPS, 'every step audited one micro-batch');
      assert.equal(v.validationChecks, VALIDATION_CHUNKS);
      assert.equal(v.mismatches, 0);
      assert.equal(v.guardFailures, 0);
      assert.equal(v.quarantines, 0);
      assert.deepEqual(quarantine.list(), []);
      assert.equal(p.workerCount(), procs.length, 'every worker is still there');

      const compared = rec.filter((e) => e.event === 'compared');
      const audits = compared.filter((e) => e.kind === 'gradients');
      assert.equal(audits.length, FAST_STEPS + CPU_STEPS, 'every audit compared two workers');
      const names = (e: LogEvent): string => [e.firstBackend, e.secondBackend].map(String).sort().join('+');
      const backends = webgpu ? ['cpu', 'wasm', 'webgpu'] : ['cpu', 'wasm'];
      const pairs = backends.flatMap((a, i) => backends.slice(i).map((b) => `${a}+${b}`));
      const lines: string[] = [];
      for (const kind of ['gradients', 'evaluate'] as const) {
        for (const pair of pairs) {
          const seen = compared.filter((e) => e.kind === kind && names(e) === pair);
          const exact = seen.filter((e) => e.exact === true);
          assert.ok(exact.every((e) => e.agreement === 'agree' && e.difference === 0), `${kind} ${pair}: same-backend computations are bit-identical`);
          assert.ok(seen.every((e) => e.agreement === 'agree' && (e.difference as number) <= CROSS_BACKEND_TOLERANCE), `${kind} ${pair}: within the tolerance`);
          if (kind === 'gradients') assert.ok(seen.length > 0, `audits compared ${pair} at least once`);
          if (seen.length === 0) continue;
          const largest = Math.max(...seen.map((e) => e.difference as number));
          lines.push(`${kind} ${pair}: ${seen.length} compared, largest relative difference ${largest.toExponential(2)}${exact.length > 0 ? ' (bit-identical)' : ''}`);
        }
      }
      const cross = compared.filter((e) => e.kind === 'gradients' && e.exact === false).map((e) => e.difference as number);
      lines.push(`largest cross-backend relative difference of a gradient audit: ${Math.max(...cross).toExponential(2)} (tolerance ${CROSS_BACKEND_TOLERANCE})`);
      for (const line of lines) t.diagnostic(line);
    } finally {
      await p.close();
      await reap(procs);
    }
  });
});
