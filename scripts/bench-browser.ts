// `browser` section of the benchmarks: a browser worker's images/s next to a Node worker's.
// Each setup is one real run of `coordinator start --workers 1` (net, batch 64, 2 epochs,
// wasm on the coordinator) with one worker: a Node worker process, or a headless Debian
// chromium tab on /join with single-threaded wasm (`?backend=wasm-st`, the build Node runs)
// or multi-threaded wasm (`?backend=wasm`, threads as tfjs picks them). Figures are the 2nd
// epoch's: end-to-end training images/s, and images per second of the worker's compute.
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, openJoin, startCoordinator, type CoordinatorRun } from '../test/browser-tools.js';
import { findChromium, type Proc } from '../test/dashboard-tools.js';
import { benchData, printTable } from './bench-distributed.js';
import { thisMachine } from './this-machine.js';

const BATCH = 64;

interface Setup {
  readonly label: string;
  /** Starts the run's one worker; returns what to stop afterwards. */
  start(run: CoordinatorRun): Promise<{ stop(): Promise<void> }>;
}

export async function benchBrowser(): Promise<void> {
  if (!findChromium()) {
    console.log('skipped: Debian chromium is not installed (apt-get install -y chromium)');
    return;
  }
  const data = await benchData();
  const root = await mkdtemp(join(tmpdir(), 'flock-bench-browser-'));
  const chrome = await launchChromium();
  const tab = (label: string, backend: string): Setup => ({
    label,
    start: async (run) => {
      const page = await openJoin(chrome.browser, run.joinUrl, { backend, name: label });
      return { stop: () => page.close() };
    },
  });
  const setups: Setup[] = [
    {
      label: 'Node worker process',
      start: (run) => {
        const w: Proc = run.nodeWorker('node');
        return Promise.resolve({ stop: async () => { w.child.kill(); await w.exited; } });
      },
    },
    tab('chromium tab, wasm-st', 'wasm-st'),
    tab('chromium tab, wasm threaded', 'wasm'),
  ];
  try {
    console.log(`machine: ${thisMachine()}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${new Date().toISOString()}; Node ${process.version}; ${await chrome.browser.version()}`);
    console.log(`net, batch 64, one worker, coordinator in its own process; data: ${data.label}; figures of the 2nd epoch`);
    const rows: string[][] = [];
    for (const [i, setup] of setups.entries()) {
      const run = await startCoordinator({ dataDir: data.dir, checkpointDir: join(root, `ck-${i}`), token: 'bench', args: ['--workers', '1', '--epochs', '2', '--batch-size', String(BATCH), '--log-level', 'info'] });
      const worker = await setup.start(run);
      try {
        const code = await run.coordinator.exited;
        if (code !== 0) throw new Error(`${setup.label}: coordinator exited with ${code}: ${run.coordinator.stderr}`);
        const epoch = run.coordinator.records.filter((r) => r.event === 'epoch').at(-1)!;
        const joined = run.coordinator.records.find((r) => r.event === 'worker_joined')!;
        const images = (epoch.steps as number) * BATCH;
        rows.push([setup.label, String(joined.backend), (epoch.imagesPerSec as number).toFixed(0), (images / (epoch.computeSeconds as number)).toFixed(0), (epoch.valAccuracy as number).toFixed(4)]);
      } finally {
        await worker.stop();
      }
    }
    printTable(['worker', 'backend (as it said hello)', 'train img/s', 'compute img/s', 'val acc'], rows);
    console.log("'compute img/s': training images per second of the worker's own compute time (what it reports per micro-batch)");
  } finally {
    await chrome.close();
    await rm(root, { recursive: true, force: true });
    await data.cleanup();
  }
}
