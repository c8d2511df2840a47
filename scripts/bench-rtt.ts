// Benchmark `rtt` (issue 10): a coordinator and 2 workers on hosts of the namespace harness,
// each worker reaching the coordinator through a delay relay adding RTT/2 each way; reports
// images/s and where the gradient phase of the steps went (computeSeconds,
// communicationSeconds, waitingSeconds of the coordinator's epoch log) at each RTT.
// Needs root. Workers get a local copy of the data (--data-dir), so after the first epoch no
// images travel: the last epoch measures weights and gradients only.
//   node dist/scripts/bench-rtt.js [--rtts 0,10,30] [--epochs 2] [--data-dir D] [--jitter-ms 0]
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { COORDINATOR_CLI, WORKER_CLI, reap, spawnNode, type Proc } from '../test/child-procs.js';
import type { LogEvent } from '../test/log-recorder.js';
import { writeSelfSignedCert } from './netsim/certs.js';
import { canCreateNamespaces } from './netsim/ip.js';
import { NetSim } from './netsim/topology.js';

const PORT = 7070;
const TOKEN = 'bench-rtt-token';

interface Flags { rtts: string; epochs: string; batchSize: string; model: string; dataDir?: string; jitterMs: string; backend: string }

export interface RttRow {
  readonly rttMs: number;
  readonly imagesPerSec: number;
  readonly computeSeconds: number;
  readonly communicationSeconds: number;
  readonly waitingSeconds: number;
  /** communication / (compute + communication + waiting) of the last epoch. */
  readonly communicationShare: number;
  readonly stepMs: number;
}

async function runOnce(rttMs: number, opts: { dataDir: string; epochs: number; batchSize: number; model: string; jitterMs: number; backend: string; certDir: string }): Promise<RttRow> {
  const sim = await NetSim.create({ workers: 2 });
  const stopSignals = sim.destroyOnSignals((code) => process.exit(code));
  const procs: Proc[] = [];
  try {
    const certs = await writeSelfSignedCert(opts.certDir, `c${rttMs}`, [sim.coordinator.address, ...sim.workers.map((w) => w.gateway)]);
    const coordinator = spawnNode('coordinator', COORDINATOR_CLI, ['start', '--host', sim.coordinator.address, '--port', String(PORT), '--workers', '2',
      '--tls-cert', certs.cert, '--tls-key', certs.key, '--data-dir', opts.dataDir, '--epochs', String(opts.epochs), '--batch-size', String(opts.batchSize),
      '--model', opts.model, '--backend', opts.backend, '--checkpoint-dir', join(opts.certDir, `ck-${rttMs}`), '--log-format', 'json', '--no-http'],
    { FLOCK_TOKEN: TOKEN }, sim.execPrefix(sim.coordinator));
    procs.push(coordinator);
    const listening = await Promise.race([coordinator.log.next((e) => e.event === 'listening'), coordinator.exited.then(() => undefined)]);
    if (!listening) throw new Error(`coordinator did not start: ${coordinator.output()}`);
    for (const [i, host] of sim.workers.entries()) {
      const relay = await sim.startRelay(host, sim.coordinator, PORT, { delayMs: rttMs / 2, jitterMs: opts.jitterMs, seed: i + 1 });
      procs.push(spawnNode(host.name, WORKER_CLI, ['--connect', `wss://${relay.address}:${relay.port}`, '--ca', certs.ca, '--backend', opts.backend,
        '--data-dir', opts.dataDir, '--name', host.name, '--log-level', 'warn', '--log-format', 'json'], { FLOCK_TOKEN: TOKEN }, sim.execPrefix(host)));
    }
    const exit = await coordinator.exited;
    if (exit.code !== 0) throw new Error(`coordinator failed (${String(exit.code ?? exit.signal)}): ${coordinator.output().slice(-2000)}`);
    const epochs = coordinator.log.filter((e: LogEvent) => e.event === 'epoch');
    const last = epochs.at(-1);
    if (!last) throw new Error('no epoch was logged');
    const [compute, communication, waiting] = [last.computeSeconds, last.communicationSeconds, last.waitingSeconds] as number[];
    const steps = last.steps as number;
    return {
      rttMs, imagesPerSec: last.imagesPerSec as number, computeSeconds: compute!, communicationSeconds: communication!, waitingSeconds: waiting!,
      communicationShare: communication! / (compute! + communication! + waiting!), stepMs: ((compute! + communication! + waiting!) * 1000) / steps,
    };
  } finally {
    await reap(procs);
    await sim.destroy();
    stopSignals();
  }
}

export async function benchRtt(o: { rtts: number[]; epochs: number; batchSize: number; model: string; dataDir?: string; jitterMs: number; backend: string }): Promise<RttRow[]> {
  const probe = await canCreateNamespaces(`flkprobe-${process.pid}`);
  if (!probe.ok) throw new Error(`the rtt benchmark needs network namespaces: ${probe.reason}`);
  const work = await mkdtemp(join(tmpdir(), 'flock-bench-rtt-'));
  try {
    let dataDir = o.dataDir;
    if (dataDir === undefined) {
      dataDir = join(work, 'data');
      await writeSyntheticCifar(dataDir, { trainPerFile: 1000, testCount: 1000, seed: 3 });
    }
    const rows: RttRow[] = [];
    for (const rtt of o.rtts) {
      const row = await runOnce(rtt, { ...o, dataDir, certDir: work });
      rows.push(row);
      console.log(JSON.stringify({ event: 'rtt', ...row }));
    }
    console.log(`\n2 workers (${o.backend}), model ${o.model}, batch ${o.batchSize}, ${o.epochs} epoch(s), last epoch; data ${o.dataDir ?? 'synthetic'}; jitter ±${o.jitterMs} ms each way`);
    console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${new Date().toISOString()}`);
    console.log('| RTT | images/s | ms/step | compute s | communication s | waiting s | communication share |');
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of rows) {
      console.log(`| ${r.rttMs} ms | ${r.imagesPerSec.toFixed(0)} | ${r.stepMs.toFixed(1)} | ${r.computeSeconds.toFixed(2)} | ${r.communicationSeconds.toFixed(2)} | ${r.waitingSeconds.toFixed(2)} | ${(100 * r.communicationShare).toFixed(0)} % |`);
    }
    return rows;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const flags = new Command('bench-rtt')
    .option('--rtts <list>', 'round-trip times to add, ms, comma-separated', '0,10,30')
    .option('--epochs <n>', 'epochs per run (the last is reported)', '2')
    .option('--batch-size <n>', 'global batch', '64')
    .option('--model <name>', 'model', 'net')
    .option('--backend <name>', 'backend of the coordinator and workers', 'wasm')
    .option('--data-dir <dir>', 'CIFAR-10 binary folder (default $FLOCK_DATA_DIR, else synthetic data of the same size)')
    .option('--jitter-ms <ms>', 'jitter each way (uniform ±)', '0')
    .parse(process.argv)
    .opts<Flags>();
  await benchRtt({
    rtts: flags.rtts.split(',').map(Number), epochs: Number(flags.epochs), batchSize: Number(flags.batchSize), model: flags.model,
    dataDir: flags.dataDir ?? process.env.FLOCK_DATA_DIR, jitterMs: Number(flags.jitterMs), backend: flags.backend,
  });
}

main().catch((err: unknown) => {
  console.error(`bench-rtt: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
