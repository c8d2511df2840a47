// Benchmark sections for distributed training (used by scripts/bench.ts):
//  - workers: end-to-end images/s with the in-process trainer and with 1 and 2 local
//    worker processes, and where the step time goes (compute, communication, waiting);
//  - coordinator: steps/s of the coordinator alone against N simulated workers that
//    answer instantly (scripts/load-generator.ts in a separate process), and the CPU per
//    step of the coordinator and of the load generator;
//  - audits: 2 workers without verification, and with it at audit rates 0, 0.05 (the
//    default) and 1, interleaved over rounds: images/s, wall and CPU time per step, each
//    round's cost paired with its own run without verification (issue 12's overhead budget).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { StepProgress } from '../coordinator/dashboard/run-monitor.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import type { EpochMetrics } from '../coordinator/metrics.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import { LocalWorkers } from '../coordinator/spawn-workers.js';
import { Trainer } from '../coordinator/trainer.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import { Arbiter } from '../coordinator/arbiter.js';
import { Quarantine } from '../coordinator/quarantine.js';
import { loadBackend } from '../shared/backends/load.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import type { ComputeBackend } from '../shared/backend.js';
import type { ModelName } from '../shared/models/layers.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec } from '../shared/models/spec.js';
import { median } from './peer-report.js';
import { cpuSeconds } from './proc-cpu.js';
import { thisMachine } from './this-machine.js';

const logger = pino({ level: 'silent' });
const LOAD_GENERATOR = fileURLToPath(new URL('./load-generator.js', import.meta.url));

/**
 * The load generator (scripts/load-generator.ts) with `count` simulated workers (relays with
 * `relays`), under this process's node flags (so `node --cpu-prof dist/scripts/bench.js`
 * profiles both sides).
 */
export function loadGenerator(url: string, count: number, dir: string, token: string, relays = false): ChildProcess {
  const args = [...process.execArgv, LOAD_GENERATOR, '--url', url, '--count', String(count), '--data-dir', dir, '--token', token, ...(relays ? ['--relay'] : [])];
  return spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** The real bird/airplane data folder (FLOCK_DATA_DIR, ../shared/data, ./data), if one is reachable. */
export function realDataDir(): string | undefined {
  const candidates = [process.env.FLOCK_DATA_DIR, resolve('../shared/data/cifar-10-batches-bin'), resolve('data/cifar-10-batches-bin')];
  return candidates.find((dir): dir is string => dir !== undefined && dir !== '' && existsSync(join(dir, 'test_batch.bin')));
}

/** The real bird/airplane data if it is reachable, else a synthetic set of the same size. */
export async function benchData(): Promise<{ dir: string; label: string; cleanup: () => Promise<void> }> {
  const real = realDataDir();
  if (real) return { dir: real, label: real, cleanup: () => Promise.resolve() };
  const dir = await mkdtemp(join(tmpdir(), 'flock-bench-'));
  await writeSyntheticCifar(dir, { trainPerFile: 2300, testCount: 2000, seed: 9 });
  return { dir, label: 'synthetic (real data not found)', cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface TrainRun {
  readonly model: ModelName;
  /** 0: the in-process trainer (LocalExecutor); N: N spawned local worker processes. */
  readonly workers: number;
  readonly data: { readonly train: Dataset; readonly validation: Dataset };
  readonly epochs: number;
  /** The backend in this process (in-process runs); loaded here when absent. */
  readonly backend?: ComputeBackend;
  /** Verify results (worker runs) at this audit rate; absent: results are taken on trust. */
  readonly auditRate?: number;
  /** The audit draw's seed (`--audit-seed`); 0 when absent. */
  readonly auditSeed?: number;
  /** Bind each worker process to its own CPU (`--bind-workers`). */
  readonly bindWorkers?: boolean;
}

/** The training steps of the last epoch after its first (which waits for the new epoch's samples): time, CPU and audits. */
export interface TrainWindow {
  readonly steps: number;
  readonly wallSeconds: number;
  /** CPU seconds of this process and of every worker process over the window. */
  readonly cpuSeconds: number;
  /** Steps of the window that had a micro-batch audited. */
  readonly audits: number;
}

/** Follows the trainer's steps and times the last epoch's steps 2 to the end (see TrainWindow). */
function windowTimer(epochs: number, workerPids: () => number[]): { onStep: (p: StepProgress) => void; window: () => TrainWindow } {
  let mark: { wall: number; cpu: number; audits: number; step: number } | undefined;
  let done: TrainWindow | undefined;
  const cpu = (): number => {
    const own = process.cpuUsage();
    return (own.user + own.system) / 1e6 + workerPids().reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  };
  return {
    onStep: (p) => {
      if (p.epoch !== epochs) return;
      const audits = p.verification?.audits ?? 0;
      if (p.step === 1) mark = { wall: performance.now(), cpu: cpu(), audits, step: p.globalStep };
      if (p.step === p.stepsPerEpoch && mark) {
        done = { steps: p.globalStep - mark.step, wallSeconds: (performance.now() - mark.wall) / 1000, cpuSeconds: cpu() - mark.cpu, audits: audits - mark.audits };
      }
    },
    window: () => {
      if (!done) throw new Error('the timed window of the last epoch did not close');
      return done;
    },
  };
}

/**
 * Trains `epochs` epochs as `coordinator start` does (--local, or --spawn-workers N, wasm
 * backend) and returns the last epoch's metrics and its timed window: full SGD steps,
 * weights updated and sent every step. The first epoch warms caches (and ships the samples
 * to the workers).
 */
export async function trainEpochs(run: TrainRun): Promise<EpochMetrics & { readonly window: TrainWindow }> {
  const { model, workers, data, epochs } = run;
  const config = resolveTrainConfig({ model, epochs }, Math.max(1, workers));
  const opts = { trainCount: data.train.count, validationCount: data.validation.count };
  if (workers === 0) {
    const backend = run.backend ?? await loadBackend('wasm', logger);
    await backend.tf.setBackend(backend.name);
    const runtime = new ModelRuntime(backend, modelSpec(model));
    const timer = windowTimer(epochs, () => []);
    try {
      const executor = new LocalExecutor(runtime, data.train, data.validation, config.seed, systemClock);
      const result = await new Trainer(config, { executor, logger, clock: systemClock, onStep: timer.onStep }, opts).run();
      return { ...result.history.at(-1)!, window: timer.window() };
    } finally {
      runtime.dispose();
    }
  }
  const token = 'bench';
  const arbiterBackend = run.auditRate === undefined ? undefined : run.backend ?? await loadBackend('wasm', logger);
  const arbiterRuntime = arbiterBackend ? new ModelRuntime(arbiterBackend, modelSpec(model)) : undefined;
  const verify = arbiterRuntime && arbiterBackend
    ? { arbiter: new Arbiter(arbiterRuntime, data, config.seed, arbiterBackend.name), quarantine: new Quarantine(), auditRate: run.auditRate, auditSeed: run.auditSeed ?? 0 }
    : undefined;
  const pool = await WorkerPool.listen({ token }, { logger, clock: systemClock, model: modelSpec(model), config, ...data, ...(verify ? { verify } : {}) });
  const local = new LocalWorkers({ count: workers, url: pool.url, token, backend: 'wasm', logLevel: 'warn', bindCpus: run.bindWorkers === true }, logger);
  const timer = windowTimer(epochs, () => local.pids());
  try {
    local.start();
    await pool.waitForWorkers(workers);
    const result = await new Trainer(config, { executor: pool, logger, clock: systemClock, onStep: timer.onStep }, opts).run();
    return { ...result.history.at(-1)!, window: timer.window() };
  } finally {
    await pool.close();
    await local.stop();
    arbiterRuntime?.dispose();
  }
}

const percent = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)} %`;

/**
 * Training throughput of 2 workers without verification and with it at audit rates 0, 0.05
 * (the default) and 1, in interleaved rounds, for issue 12's budget: the cost at the default
 * rate is at most the rate + 2 % of throughput. Measured over the last epoch's steps
 * (TrainWindow) as wall time per step and as CPU time per step of all processes: CPU time
 * barely moves when other jobs share the machine, wall time does. Each round's cost is taken
 * against the same round's run without verification (the median of those paired costs is
 * reported). The window's audited steps are a random draw (about 8 of 155 at 0.05; each round has its own seed), so the
 * cost at the default rate is also given as the cost at rate 0 plus 0.05 × the cost of an
 * audited step measured at rate 1, where every step is audited.
 */
export async function benchAudits(rounds: number): Promise<void> {
  const data = await benchData();
  try {
    const sets = await loadCifar(data.dir);
    const epochs = 2;
    const rate = 0.05;
    console.log(`audits: Net, batch 64, 2 wasm workers, data: ${data.label}; epoch ${epochs}'s steps 2 to the end, ${rounds} interleaved rounds; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    const setups: { label: string; auditRate?: number }[] = [
      { label: 'no verification' }, { label: 'verified, audit rate 0', auditRate: 0 }, { label: `verified, audit rate ${rate}`, auditRate: rate }, { label: 'verified, audit rate 1', auditRate: 1 },
    ];
    const runs = setups.map(() => [] as TrainWindow[]);
    for (let r = 0; r < rounds; r++) {
      // Each round draws its audited steps with its own seed: a single seed's window audits a
      // fixed share of its steps (seed 0: 14 of 155), the rate is a probability over draws.
      for (const [i, s] of setups.entries()) runs[i]!.push((await trainEpochs({ model: 'net', workers: 2, data: sets, epochs, ...(s.auditRate === undefined ? {} : { auditRate: s.auditRate, auditSeed: r }) })).window);
    }
    const wallPerStep = (w: TrainWindow): number => w.wallSeconds / w.steps;
    const cpuPerStep = (w: TrainWindow): number => w.cpuSeconds / w.steps;
    /** Median over rounds of this round's cost against the same round without verification. */
    const paired = (i: number, per: (w: TrainWindow) => number): number => median(runs[i]!.map((w, r) => per(w) / per(runs[0]![r]!) - 1));
    printTable(['setup', 'images/s (median)', 'all rounds', 'wall cost (paired median)', 'CPU ms/step (median)', 'CPU cost (paired median)', 'audited steps per round'], setups.map((s, i) => {
      const ws = runs[i]!;
      return [
        s.label, median(ws.map((w) => 64 / wallPerStep(w))).toFixed(0), ws.map((w) => (64 / wallPerStep(w)).toFixed(0)).join(' '),
        i === 0 ? '' : percent(paired(i, wallPerStep)), median(ws.map((w) => 1000 * cpuPerStep(w))).toFixed(1),
        i === 0 ? '' : percent(paired(i, cpuPerStep)), ws.map((w) => `${w.audits}/${w.steps}`).join(' '),
      ];
    }));
    const budget = rate + 0.02;
    const drop = (cost: number): number => 1 - 1 / (1 + cost);
    const verdict = (cost: number): string => `${percent(-drop(cost))} of throughput: ${drop(cost) <= budget ? 'within' : 'OVER'} the budget`;
    const audited = runs[2]!.reduce((n, w) => n + w.audits, 0) / runs[2]!.reduce((n, w) => n + w.steps, 0);
    for (const [what, per] of [['wall time', wallPerStep], ['CPU time', cpuPerStep]] as const) {
      const atRate = paired(2, per);
      const base = paired(1, per);
      const perAudit = paired(3, per) - base;
      // The window's audits are a draw: scaled to the rate, the measured cost of its audited steps.
      const scaled = audited > 0 ? base + ((atRate - base) * rate) / audited : base;
      console.log(`${what}: at audit rate ${rate}: ${percent(atRate)} per step as measured (${(100 * audited).toFixed(1)} % of the window's steps audited), ${verdict(atRate)}; ` +
        `scaled to ${100 * rate} % audited steps ${percent(scaled)}, ${verdict(scaled)}; ` +
        `as rate 0 ${percent(base)} + ${rate} x ${percent(perAudit)} per audited step (rate 1): ${percent(base + rate * perAudit)}, ${verdict(base + rate * perAudit)}`);
    }
    console.log(`budget: throughput at most the audit rate + 2 % = ${(100 * budget).toFixed(1)} % lower than without verification`);
  } finally {
    await data.cleanup();
  }
}

export async function benchWorkers(): Promise<void> {
  const data = await benchData();
  try {
    const sets = await loadCifar(data.dir);
    console.log(`Net, batch 64, wasm, data: ${data.label} (${sets.train.count} train images); figures of the 2nd epoch`);
    const rows: string[][] = [];
    let one = 0;
    for (const workers of [0, 1, 2]) {
      const m = await trainEpochs({ model: 'net', workers, data: sets, epochs: 2 });
      const stepTime = m.computeSeconds + m.communicationSeconds + m.waitingSeconds;
      if (workers === 1) one = m.imagesPerSec;
      rows.push([
        workers === 0 ? 'in-process' : `${workers} worker${workers > 1 ? 's' : ''}`,
        m.imagesPerSec.toFixed(0),
        workers >= 1 && one > 0 ? `${(m.imagesPerSec / one).toFixed(2)}x` : '',
        (m.seconds).toFixed(2),
        workers === 0 ? '' : `${((100 * m.communicationSeconds) / stepTime).toFixed(1)} %`,
        workers === 0 ? '' : `${((100 * m.waitingSeconds) / stepTime).toFixed(1)} %`,
        m.valAccuracy.toFixed(4),
      ]);
    }
    printTable(['setup', 'train img/s', 'vs 1 worker', 's/epoch', 'communication', 'waiting', 'val acc'], rows);
  } finally {
    await data.cleanup();
  }
}

export async function benchCoordinator(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'flock-bench-coord-'));
  try {
    await writeSyntheticCifar(dir, { trainPerFile: 1200, testCount: 256, seed: 3 });
    const data = await loadCifar(dir);
    console.log(`coordinator alone: Net gradients (${modelSpec('net').parameterCount} parameters), global batch 64, simulated workers answer instantly; steps/s of the 2nd epoch (${Math.floor(data.train.count / 64)} steps)`);
    const rows: string[][] = [];
    const counts = process.env.FLOCK_BENCH_COORD_WORKERS?.split(',').map(Number) ?? [1, 4, 16, 64];
    for (const n of counts) {
      const config = resolveTrainConfig({ model: 'net', epochs: 2 }, n);
      const token = 'bench';
      const pool = await WorkerPool.listen({ token }, { logger, clock: systemClock, model: modelSpec('net'), config, ...data });
      const gen = loadGenerator(pool.url, n, dir, token);
      try {
        await pool.waitForWorkers(n);
        // CPU time of this process over the 2nd epoch's steps: less disturbed by other jobs than steps/s.
        // The load generator's CPU over the same steps: it shares the machine's cores. /proc is
        // read at the window's ends only: a read per step would add to the coordinator's figure.
        const cpu = { start: undefined as NodeJS.CpuUsage | undefined, genStart: 0, used: 0, genUsed: 0, steps: 0 };
        const onStep = (p: StepProgress): void => {
          if (p.epoch !== 2) return;
          if (!cpu.start) {
            cpu.start = process.cpuUsage();
            cpu.genStart = cpuSeconds(gen.pid!);
            return;
          }
          if (p.step !== p.stepsPerEpoch) return;
          const d = process.cpuUsage(cpu.start);
          cpu.used = (d.user + d.system) / 1000;
          cpu.genUsed = (cpuSeconds(gen.pid!) - cpu.genStart) * 1000;
          cpu.steps = p.step - 1;
        };
        const result = await new Trainer(config, { executor: pool, logger, clock: systemClock, onStep }, { trainCount: data.train.count, validationCount: data.validation.count }).run();
        const m = result.history.at(-1)!;
        const steps = m.imagesPerSec / config.batchSize;
        const perStep = (ms: number): string => (ms / Math.max(1, cpu.steps)).toFixed(2);
        rows.push([String(n), String(config.microBatch), steps.toFixed(1), (1000 / steps).toFixed(2), perStep(cpu.used), perStep(cpu.genUsed), (m.imagesPerSec).toFixed(0)]);
      } finally {
        await pool.close();
        if (gen.exitCode === null) await once(gen, 'exit');
      }
    }
    printTable(['workers', 'micro-batch', 'steps/s', 'ms/step', 'coordinator CPU ms/step', 'load generator CPU ms/step', 'images/s ceiling'], rows);
    console.log(`machine: ${thisMachine()}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end, ${new Date().toISOString()}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log([line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n'));
}
