#!/usr/bin/env node
// A real worker process whose results are wrong in one chosen way (issue 12's acceptance):
// the plain Worker with a ModelRuntime that tampers with what it returns. Results stay
// finite and well-formed, so only guards and audits can tell. 'compute-time' returns honest
// results but claims each took 1,000 s (its clock jumps while it computes).
//   node dist/test/lying-worker.js --connect URL --name N --lie KIND [--backend wasm]
import { parseArgs } from 'node:util';
import type { ComputeBackend } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { createLogger } from '../shared/logger.js';
import { ModelRuntime, type Batch, type EvalResult, type GradientResult } from '../shared/models/runtime.js';
import type { ModelSpec, ModelState } from '../shared/models/spec.js';
import type { Clock } from '../shared/clock.js';
import { Rng } from '../shared/random.js';
import { Worker } from '../worker/worker.js';

export const LIES = ['scale', 'sign', 'other-micro-batch', 'stale', 'noise', 'sometimes', 'fake-validation', 'compute-time'] as const;
export type Lie = (typeof LIES)[number];

const norm = (ts: readonly Float32Array[]): number => Math.sqrt(ts.reduce((s, t) => s + t.reduce((a, v) => a + v * v, 0), 0));

class LyingRuntime extends ModelRuntime {
  private previousState: ModelState | undefined;
  private last: GradientResult | undefined;
  private readonly rng = new Rng(12345);

  /** @param skew moves the worker's clock forward (the 'compute-time' lie) */
  constructor(backend: ComputeBackend, model: ModelSpec, private readonly lie: Lie, private readonly skew: (ms: number) => void) {
    super(backend, model);
  }

  override setState(state: ModelState): void {
    // 'stale': compute with the weights of the version before (the first one is honest).
    super.setState(this.lie === 'stale' ? this.previousState ?? state : state);
    this.previousState = state;
    this.last = undefined;
  }

  override async gradients(batch: Batch, dropoutSeed: number): Promise<GradientResult> {
    const honest = await super.gradients(batch, dropoutSeed);
    if (this.lie === 'compute-time') this.skew(1e6);
    const previous = this.last;
    this.last = honest;
    switch (this.lie) {
      case 'scale':
        return { ...honest, grads: honest.grads.map((g) => g.map((v) => v * 10)) };
      case 'sign':
        return { ...honest, grads: honest.grads.map((g, k) => (k % 2 === 0 ? g.map((v) => -v) : g)) };
      case 'other-micro-batch':
        // The gradient of the micro-batch computed before it at the same weights (same step).
        return previous && previous.count === honest.count ? previous : honest;
      case 'noise':
        return this.noisy(honest);
      case 'sometimes':
        return this.rng.next() < 0.3 ? this.noisy(honest) : honest;
      case 'stale':
      case 'fake-validation':
      case 'compute-time':
        return honest;
    }
  }

  override async evaluate(batch: Batch): Promise<EvalResult> {
    const honest = await super.evaluate(batch);
    // Claims every image right, with a loss small enough to be consistent with that.
    return this.lie === 'fake-validation' ? { lossSum: honest.count * 1e-3, correct: honest.count, count: honest.count } : honest;
  }

  /** Small noise (1e-3 of the norm), rescaled to the honest norm: no norm guard can see it. */
  private noisy(r: GradientResult): GradientResult {
    const grads = r.grads.map((g) => g.map((v) => v + (this.rng.next() - 0.5) * 1e-3 * Math.abs(v)));
    const scale = norm(r.grads) / Math.max(norm(grads), 1e-30);
    return { ...r, grads: grads.map((g) => g.map((v) => v * scale)) };
  }
}

async function main(): Promise<void> {
  // `node --test dist/test/` runs every file here: without arguments there is nothing to do.
  if (process.argv.length <= 2) return;
  const { values } = parseArgs({ options: { connect: { type: 'string' }, name: { type: 'string' }, lie: { type: 'string' }, backend: { type: 'string', default: 'wasm' } } });
  const lie = values.lie as Lie;
  if (!values.connect || !values.name || !LIES.includes(lie)) throw new Error(`usage: lying-worker --connect URL --name N --lie ${LIES.join('|')}`);
  const log = createLogger({ level: 'warn', format: 'json', name: 'worker' }).child({ worker: values.name });
  const backend = await loadBackend(values.backend as 'wasm', log);
  let skewMs = 0;
  const clock: Clock = { now: () => performance.now() + skewMs };
  const worker = new Worker({ url: values.connect, name: values.name, token: process.env.FLOCK_TOKEN || undefined, backoff: { initialMs: 50, maxMs: 200, factor: 2, jitter: 0.2 } },
    { logger: log, backend, clock, runtime: (b, m) => new LyingRuntime(b, m, lie, (ms) => { skewMs += ms; }) });
  await worker.run();
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`lying-worker: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
