// Benchmark section `relays`: the coordinator's own cost per step (CPU time of this process,
// which runs the pool and the trainer) with simulated workers connected directly and with
// hundreds of simulated workers behind `coordinator relay` processes, and each relay's CPU
// per step (read from /proc, so Linux only). Simulated workers (scripts/load-generator.ts)
// answer at once; relays and generators present the data set's hashes, so no images travel.
// Timed window: the second epoch's steps after its first, without validation.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Trainer } from '../coordinator/trainer.js';
import { WorkerPool } from '../coordinator/worker-pool.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { modelSpec } from '../shared/models/spec.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import { loadGenerator, printTable } from './bench-distributed.js';
import { cpuSeconds } from './proc-cpu.js';

const logger = pino({ level: 'silent' });
const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));
const TOKEN = 'bench';

interface Case {
  readonly label: string;
  readonly batchSize: number;
  readonly microBatch: number;
  readonly reduceGroup: number;
  /** Simulated workers on the coordinator itself. */
  readonly direct: number;
  /** Relays, each with this many simulated workers. */
  readonly relays: number;
  readonly perRelay: number;
  /** Simulated relays (the load generator answers with group sums; no relay processes). */
  readonly simulatedRelays?: number;
}
/** A relay process with the data folder (same hashes: no images travel); resolves with its workers' URL. */
async function relay(url: string, dir: string, name: string, children: ChildProcess[]): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [...process.execArgv, COORDINATOR_CLI, 'relay', '--connect', url, '--data-dir', dir, '--name', name, '--log-format', 'json', '--log-level', 'info', '--max-connections', '1024', '--max-pending', '256'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FLOCK_TOKEN: TOKEN } });
  children.push(proc);
  const lines = createInterface({ input: proc.stdout });
  for await (const line of lines) {
    const e = JSON.parse(line) as { event?: string; url?: string };
    if (e.event === 'relay_ready') {
      lines.on('line', () => undefined);
      return { proc, url: e.url! };
    }
  }
  throw new Error(`relay ${name} ended before it listened`);
}

/** The case's table row, and the coordinator's CPU ms per step (unrounded, for the issue-11 ratio). */
async function runCase(c: Case, dir: string, data: Awaited<ReturnType<typeof loadCifar>>): Promise<{ row: string[]; coordCpuMs: number }> {
  const config = resolveTrainConfig({ model: 'net', epochs: 2, batchSize: c.batchSize, microBatch: c.microBatch, reduceGroup: c.reduceGroup }, 1);
  const pool = await WorkerPool.listen({ token: TOKEN, maxConnections: 2048, maxPending: 512 }, { logger, clock: systemClock, model: modelSpec('net'), config, ...data });
  const children: ChildProcess[] = [];
  const relays: ChildProcess[] = [];
  try {
    if (c.direct > 0) children.push(loadGenerator(pool.url, c.direct, dir, TOKEN));
    if (c.simulatedRelays) children.push(loadGenerator(pool.url, c.simulatedRelays, dir, TOKEN, true));
    for (let r = 0; r < c.relays; r++) {
      const { proc, url } = await relay(pool.url, dir, `relay-${r}`, children);
      relays.push(proc);
      children.push(loadGenerator(url, c.perRelay, dir, TOKEN));
    }
    await pool.waitForWorkers(c.direct + c.relays + (c.simulatedRelays ?? 0));
    const steps = Math.floor(data.train.count / c.batchSize);
    let mark: { cpu: NodeJS.CpuUsage; wall: number; relayCpu: number } | undefined;
    let timed: { cpuMs: number; wallMs: number; relayCpuMs: number; steps: number } | undefined;
    const relayCpu = (): number => relays.reduce((s, p) => s + cpuSeconds(p.pid!), 0);
    await new Trainer(config, {
      executor: pool, logger, clock: systemClock,
      onStep: (p) => {
        if (p.globalStep === steps + 1) mark = { cpu: process.cpuUsage(), wall: performance.now(), relayCpu: relayCpu() };
        if (p.globalStep === 2 * steps && mark) {
          const cpu = process.cpuUsage(mark.cpu);
          timed = { cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - mark.wall, relayCpuMs: (relayCpu() - mark.relayCpu) * 1000, steps: steps - 1 };
        }
      },
    }, { trainCount: data.train.count, validationCount: data.validation.count }).run();
    if (!timed) throw new Error('the timed window did not close');
    const n = timed.steps;
    const workers = c.direct + (c.relays + (c.simulatedRelays ?? 0)) * c.perRelay;
    const row = [c.label, String(workers), `${c.batchSize}/${c.microBatch}/${c.reduceGroup}`, (timed.cpuMs / n).toFixed(2), (timed.wallMs / n).toFixed(2), (1000 * n / timed.wallMs).toFixed(1),
      c.relays > 0 ? (timed.relayCpuMs / n / c.relays).toFixed(2) : '-'];
    return { row, coordCpuMs: timed.cpuMs / n };
  } finally {
    await pool.close();
    await Promise.all(children.filter((p) => p.exitCode === null && p.signalCode === null).map((p) => once(p, 'exit')));
  }
}

export async function benchRelays(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'flock-bench-relays-'));
  try {
    await writeSyntheticCifar(dir, { trainPerFile: 2400, testCount: 256, seed: 3 });
    const data = await loadCifar(dir);
    const model = modelSpec('net');
    console.log(`coordinator cost per step with relays: Net (${model.parameterCount} parameters, ${(model.parameterCount * 4 / 1024).toFixed(0)} KiB a gradient), simulated workers answer instantly, ` +
      `${data.train.count} training images; timed: 2nd epoch after its first step, no validation. coord CPU = this process (pool + trainer); relay CPU = each relay process, mean`);
    const cases: Case[] = [
      { label: '4 direct (batch 64)', batchSize: 64, microBatch: 16, reduceGroup: 0, direct: 4, relays: 0, perRelay: 0 },
      { label: '4 direct (batch 256)', batchSize: 256, microBatch: 64, reduceGroup: 0, direct: 4, relays: 0, perRelay: 0 },
      { label: '64 direct (batch 64)', batchSize: 64, microBatch: 1, reduceGroup: 0, direct: 64, relays: 0, perRelay: 0 },
      { label: '256 direct (batch 256)', batchSize: 256, microBatch: 1, reduceGroup: 0, direct: 256, relays: 0, perRelay: 0 },
      { label: '4 simulated relays x 64', batchSize: 256, microBatch: 1, reduceGroup: 64, direct: 0, relays: 0, perRelay: 64, simulatedRelays: 4 },
      { label: '4 relays x 64', batchSize: 256, microBatch: 1, reduceGroup: 64, direct: 0, relays: 4, perRelay: 64 },
      { label: '16 simulated relays x 64', batchSize: 1024, microBatch: 1, reduceGroup: 64, direct: 0, relays: 0, perRelay: 64, simulatedRelays: 16 },
      { label: '16 relays x 64', batchSize: 1024, microBatch: 1, reduceGroup: 64, direct: 0, relays: 16, perRelay: 64 },
    ];
    const only = process.env.FLOCK_BENCH_RELAY_CASES?.split(',').map(Number);
    const rows: string[][] = [];
    const cpu = new Map<string, number>();
    for (const [i, c] of cases.entries()) {
      if (only && !only.includes(i)) continue;
      const { row, coordCpuMs } = await runCase(c, dir, data);
      cpu.set(c.label, coordCpuMs);
      rows.push(row);
    }
    printTable(['set-up', 'workers', 'batch/mb/group', 'coord CPU ms/step', 'wall ms/step', 'steps/s', 'relay CPU ms/step'], rows);
    // Issue 11's acceptance: 256 workers behind 4 relays cost the coordinator at most twice 4 direct workers.
    const behind = cpu.get('4 relays x 64');
    for (const direct of ['4 direct (batch 64)', '4 direct (batch 256)']) {
      const base = cpu.get(direct);
      if (behind !== undefined && base !== undefined) console.log(`coordinator CPU, 4 relays x 64 / ${direct}: ${(behind / base).toFixed(2)}x (issue 11: at most 2x)`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
