// Benchmarks, as named sections: `npm run bench` runs them all, `node dist/scripts/bench.js
// train` only the named ones. Flags: --include-cpu (the cpu backend trains at a few images/s,
// so it is skipped unless asked for), --steps N (timed training steps; default 30, and 100 for
// `peer`, whose windows of 30 steps varied by ±20 % from round to round on PyTorch's side too),
// --rounds N (rounds of the `peer` and `dashboard` comparisons, default 3). Environment: FLOCK_TORCH_PYTHON
// (the Python with PyTorch for `peer`), FLOCK_DATA_DIR (real data for `workers` and `peer`).
// Each section is one async function in `sections`; add new ones there.
import pino from 'pino';
import type { ComputeBackend } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { errorMessage } from '../shared/errors.js';
import { benchBrowser } from './bench-browser.js';
import { benchAudits, benchCoordinator, benchWorkers } from './bench-distributed.js';
import { benchRelays } from './bench-relays.js';
import { benchPool } from './bench-pool.js';
import { benchDashboard } from './bench-dashboard.js';
import { benchPeer } from './bench-peer.js';
import { IMAGE_BYTES, MODEL_NAMES } from '../shared/models/layers.js';
import { ModelRuntime, type Batch } from '../shared/models/runtime.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { Rng } from '../shared/random.js';

interface Options {
  readonly includeCpu: boolean;
  /** --steps; undefined: each section's own default. */
  readonly steps: number | undefined;
  readonly rounds: number;
  readonly torchPython: string | undefined;
}

const logger = pino({ level: 'silent' });

function syntheticBatch(count: number, seed: number): Batch {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * IMAGE_BYTES);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextUint32() & 255;
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = i & 1;
  return { images, labels, count };
}

/** Loads every backend that is installed, in the order tensorflow, webgpu, wasm, cpu. */
async function availableBackends(): Promise<{ loaded: ComputeBackend[]; missing: string[] }> {
  const loaded: ComputeBackend[] = [];
  const missing: string[] = [];
  for (const name of ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const) {
    try {
      loaded.push(await loadBackend(name, logger));
    } catch (err) {
      missing.push(`${name} (${errorMessage(err).split(' (')[0] ?? ''})`);
    }
  }
  return { loaded, missing };
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/**
 * Training (gradients of batch-64 micro-batches: no SGD update, no new weights) and evaluation
 * throughput per model and backend. Whole training steps are what `peer` measures.
 */
async function train(options: Options): Promise<void> {
  const BATCH = 64;
  const WARMUP = 5;
  const timedSteps = options.steps ?? 30;
  const EVAL_IMAGES = 2000;
  const { loaded, missing } = await availableBackends();
  for (const m of missing) console.log(`backend ${m}: not available, skipped`);
  const rows: string[][] = [];
  const batch = syntheticBatch(BATCH, 1);
  const evalBatch = syntheticBatch(EVAL_IMAGES, 2);
  for (const backend of loaded) {
    await backend.tf.setBackend(backend.name);
    const skipTraining = backend.name === 'cpu' && !options.includeCpu;
    if (skipTraining) console.log('cpu: training skipped (a few images/s; pass --include-cpu to measure it)');
    console.log(`${backend.name}: ${backend.detail}`);
    for (const name of MODEL_NAMES) {
      const model = modelSpec(name);
      const runtime = new ModelRuntime(backend, model);
      runtime.setState(initialState(model, 0));
      let trainRate = NaN;
      let cpuRate = NaN;
      let stepMs = NaN;
      if (!skipTraining) {
        const steps = backend.name === 'cpu' ? Math.min(timedSteps, 3) : timedSteps;
        for (let i = 0; i < (backend.name === 'cpu' ? 1 : WARMUP); i++) await runtime.gradients(batch, i);
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        for (let i = 0; i < steps; i++) await runtime.gradients(batch, 100 + i);
        const cpu = process.cpuUsage(c0);
        stepMs = (performance.now() - t0) / steps;
        trainRate = (BATCH * 1000) / stepMs;
        cpuRate = (BATCH * steps * 1e6) / (cpu.user + cpu.system);
      }
      const evalCount = backend.name === 'cpu' ? 500 : EVAL_IMAGES;
      const evalData: Batch = { images: evalBatch.images.subarray(0, evalCount * IMAGE_BYTES), labels: evalBatch.labels.subarray(0, evalCount), count: evalCount };
      await runtime.evaluate({ ...evalData, count: Math.min(evalCount, 500) }); // warm-up
      const t1 = performance.now();
      await runtime.evaluate(evalData);
      const evalRate = (evalCount * 1000) / (performance.now() - t1);
      runtime.dispose();
      const fmt = (v: number, digits = 0): string => (Number.isNaN(v) ? 'skipped' : v.toFixed(digits));
      rows.push([backend.name, name, fmt(trainRate), fmt(cpuRate), fmt(stepMs, 1), fmt(evalRate)]);
    }
  }
  console.log(`\ntraining: batch ${BATCH}, ${timedSteps} timed steps after warm-up; evaluation: ${EVAL_IMAGES} images (500 on cpu); one process, one thread`);
  console.log(table(['backend', 'model', 'train img/s', 'per CPU-s', 'ms/step', 'eval img/s'], rows));
  console.log("'per CPU-s': images per second of this process's CPU time (all its threads), a steadier figure on a busy machine");
}

const sections: Record<string, (options: Options) => Promise<void>> = {
  train,
  workers: () => benchWorkers(),
  audits: (o) => benchAudits(o.rounds),
  coordinator: () => benchCoordinator(),
  pool: () => benchPool(),
  relays: () => benchRelays(),
  peer: (options) => benchPeer({ ...options, steps: options.steps ?? 100 }),
  browser: () => benchBrowser(),
  dashboard: (options) => benchDashboard(options),
};

function parseArgs(argv: string[], env: NodeJS.ProcessEnv): { names: string[]; options: Options } {
  const names: string[] = [];
  let includeCpu = false;
  let steps: number | undefined;
  let rounds = 3;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--include-cpu') includeCpu = true;
    else if (arg === '--steps') steps = Number(argv[++i]);
    else if (arg === '--rounds') rounds = Number(argv[++i]);
    else if (arg.startsWith('--')) throw new Error(`unknown flag ${arg}`);
    else names.push(arg);
  }
  if (steps !== undefined && (!Number.isInteger(steps) || steps < 1)) throw new Error('--steps needs a positive integer');
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds needs a positive integer');
  return { names, options: { includeCpu, steps, rounds, torchPython: env.FLOCK_TORCH_PYTHON } };
}

async function main(): Promise<void> {
  const { names, options } = parseArgs(process.argv.slice(2), process.env);
  const unknown = names.filter((n) => !(n in sections));
  if (unknown.length > 0) throw new Error(`unknown section(s) ${unknown.join(', ')}; known: ${Object.keys(sections).join(', ')}`);
  for (const name of names.length > 0 ? names : Object.keys(sections)) {
    console.log(`\n== ${name} ==`);
    await sections[name]!(options);
  }
}

main().catch((err: unknown) => {
  console.error(errorMessage(err));
  process.exitCode = 1;
});
