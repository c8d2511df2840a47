// Benchmark section `dashboard` (used by scripts/bench.ts): what watching a run costs it.
// First, in process, the server's own work per step (the run monitor and the workers table,
// with nobody watching and with an open event stream). Then `coordinator start
// --spawn-workers 2` on synthetic data, in alternating rounds: with --no-http, with HTTP on
// and only the event stream read (no browser), and with the dashboard open in headless
// Debian chromium (puppeteer-core) with its event stream live. Throughput is the mean training images/s of
// the epochs after the first (the first ships the samples to the workers). Over the same
// window (from the first epoch's log line to the last's) it reads from /proc the CPU time
// of the coordinator, of its two workers and of every chromium process, so that the cost
// splits into the server's part (the coordinator's CPU, page open minus --no-http) and the
// browser's own (chromium's CPU). Prints every round, the medians and the ratios.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser } from 'puppeteer-core';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { createHttpRoutes } from '../coordinator/dashboard/http-routes.js';
import { createRunMetrics } from '../coordinator/dashboard/prometheus.js';
import { RunMonitor, type LiveWorker } from '../coordinator/dashboard/run-monitor.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { NODE_FLAGS } from '../shared/node-flags.js';
import { printTable } from './bench-distributed.js';
import { thisMachine } from './this-machine.js';
import { median } from './peer-report.js';
import { cpuBetween, treeCpuSeconds } from './proc-cpu.js';

const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));
const TOKEN = 'bench-dashboard';
const EPOCHS = 8;
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
/**
 * Puppeteer's defaults that no user's browser has and that would make the page cost more
 * than it does for a person (a page that is never throttled); the page is still asserted
 * visible and drawing during the timed window.
 */
const NOT_A_USERS_BROWSER = ['--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows', '--disable-ipc-flooding-protection'];
/** A desktop window large enough to show the whole page (every chart, the tables). */
const VIEWPORT = { width: 1400, height: 1000 };

type LogRecord = Record<string, unknown>;

/** CPU seconds spent during the timed window. */
interface WindowCpu {
  readonly coordinator: number;
  readonly workers: number;
  readonly chromium: number;
}

interface Round {
  readonly kind: string;
  readonly imagesPerSec: number;
  readonly images: number;
  readonly seconds: number;
  readonly cpu: WindowCpu;
  /** During the window: the page's redraws, or the stream's update batches; none with --no-http. */
  readonly updates?: number;
  /** /proc/loadavg at the window's end (1, 5, 15 minutes). */
  readonly load: string;
}

interface Sample {
  readonly at: number;
  readonly coordinator: number;
  readonly tree: Map<number, number>;
  readonly chromium: Map<number, number>;
}

/** Who watches the run: nobody (--no-http), a bare event-stream reader, or the page in chromium. */
interface Watcher {
  readonly kind: string;
  readonly http: boolean;
  /** Starts watching the dashboard at `url` (called when the coordinator logs it). */
  open(url: string): Promise<void>;
  /** Updates drawn (page) or received (stream) so far. */
  seen(): Promise<number>;
  close(): Promise<void>;
}

const nobody: Watcher = { kind: '--no-http', http: false, open: () => Promise.resolve(), seen: () => Promise.resolve(0), close: () => Promise.resolve() };

/** The event stream read by this process and dropped: the server's whole cost, no rendering. */
function streamReader(): Watcher {
  let batches = 0;
  const abort = new AbortController();
  let reading: Promise<void> = Promise.resolve();
  return {
    kind: 'stream only', http: true,
    async open(url) {
      const res = await fetch(`${url}events`, { headers: { Authorization: `Bearer ${TOKEN}` }, signal: abort.signal });
      if (!res.ok || !res.body) throw new Error(`/events answered ${res.status}`);
      const body = res.body.pipeThrough(new TextDecoderStream());
      reading = (async () => {
        try {
          for await (const chunk of body) batches += chunk.split('event: updates\n').length - 1;
        } catch {
          // The coordinator ended the stream, or close() aborted it.
        }
      })();
    },
    seen: () => Promise.resolve(batches),
    async close() {
      abort.abort();
      await reading;
    },
  };
}

/** The dashboard in a new tab of `browser`, asserted visible whenever its draws are counted. */
async function pageWatcher(browser: Browser): Promise<Watcher> {
  const page = await browser.newPage();
  await page.setViewport(VIEWPORT);
  return {
    kind: 'page open', http: true,
    async open(url) {
      await page.goto(`${url}?token=${TOKEN}`, { waitUntil: 'load' });
      await page.waitForSelector('#app[data-connected="true"]');
    },
    async seen() {
      const d = await page.$eval('#app', (el) => ({ draws: Number((el as HTMLElement).dataset.draws ?? 0), visible: document.visibilityState === 'visible' }));
      if (!d.visible) throw new Error('the dashboard page is not visible: its cost would not be measured');
      return d.draws;
    },
    close: () => page.close(),
  };
}

/** One coordinator run, watched by `watcher` from the moment the dashboard's address is logged. */
async function run(dataDir: string, checkpointDir: string, browserPid: number, watcher: Watcher): Promise<Round> {
  const args = [COORDINATOR_CLI, 'start', '--spawn-workers', '2', '--epochs', String(EPOCHS), '--batch-size', '64', '--lr', '0.05',
    '--data-dir', dataDir, '--checkpoint-dir', checkpointDir, '--backend', 'wasm', '--token', TOKEN, '--log-format', 'json', ...(watcher.http ? [] : ['--no-http'])];
  // Run as deployed: with the node flags every Flock process gets (npx, npm start, deploy/).
  const child = spawn(process.execPath, [...NODE_FLAGS, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLOCK_DATA_DIR: '', FLOCK_TOKEN: '' } });
  const pid = child.pid!;
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const epochs: LogRecord[] = [];
  let opened: Promise<void> = Promise.resolve();
  const seen: Promise<number>[] = [];
  const samples: Sample[] = [];
  const sample = (): Sample => {
    const tree = treeCpuSeconds(pid);
    return { at: performance.now(), coordinator: tree.get(pid) ?? 0, tree, chromium: treeCpuSeconds(browserPid) };
  };
  // Awaited below; handled at once too, so that a failed run does not also leave a rejection.
  const later = <T>(p: Promise<T>): Promise<T> => {
    p.catch(() => undefined);
    return p;
  };
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const r = JSON.parse(line) as LogRecord;
    if (r.name !== 'coordinator') return;
    if (r.event === 'epoch') {
      epochs.push(r);
      // The timed window: from the end of the first epoch to the end of the last.
      if (r.epoch === 1 || r.epoch === EPOCHS) {
        samples.push(sample());
        seen.push(later(opened.then(() => watcher.seen())));
      }
    }
    if (r.event === 'dashboard') opened = later(watcher.open(r.url as string));
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  await opened;
  if (code !== 0) throw new Error(`coordinator exited ${code}: ${stderr}`);
  const [start, end] = samples;
  if (!start || !end || epochs.length !== EPOCHS) throw new Error(`the run logged ${epochs.length} epochs, ${EPOCHS} expected`);
  const [seenAtStart, seenAtEnd] = await Promise.all(seen);
  const measured = epochs.slice(1);
  const workers = cpuBetween(start.tree, end.tree) - (end.coordinator - start.coordinator);
  return {
    kind: watcher.kind,
    imagesPerSec: measured.reduce((a, e) => a + (e.imagesPerSec as number), 0) / measured.length,
    images: measured.reduce((a, e) => a + (e.steps as number), 0) * 64,
    seconds: (end.at - start.at) / 1000,
    cpu: { coordinator: end.coordinator - start.coordinator, workers, chromium: cpuBetween(start.chromium, end.chromium) },
    updates: watcher.http ? seenAtEnd! - seenAtStart! : undefined,
    load: loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

/**
 * The server's work per step, in this process: what the coordinator's onStep does (the
 * monitor's step, the workers table when due) for synthetic steps, with nobody watching and
 * with the metrics and one open event stream (a real HTTP server, read by fetch). CPU µs per
 * step, which the machine's load disturbs far less than throughput.
 */
async function serverMicroseconds(watched: boolean, steps: number): Promise<number> {
  const monitor = new RunMonitor();
  monitor.ingest({ name: 'coordinator', event: 'config', epochs: 1000 });
  for (const id of [1, 2]) monitor.ingest({ name: 'coordinator', event: 'worker_joined', workerId: id, workerName: `w${id}`, backend: 'wasm', adapter: 'CPU' });
  const metrics = watched ? createRunMetrics(monitor, { defaultMetrics: false }) : undefined;
  const routes = metrics ? createHttpRoutes({ tls: false, minWorkers: 1 }, { monitor, registry: metrics.registry, assets: { html: '', script: Buffer.alloc(0), style: Buffer.alloc(0) } }) : undefined;
  const server = routes ? createServer(routes.handle) : undefined;
  const abort = new AbortController();
  let reading: Promise<void> = Promise.resolve();
  try {
    if (server) {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, { signal: abort.signal });
      reading = (async () => {
        try {
          for await (const chunk of res.body!) void chunk;
        } catch {
          // aborted at the end
        }
      })();
    }
    const live = (results: number): LiveWorker[] => [1, 2].map((id) => ({ id, name: `w${id}`, backend: 'wasm', adapter: 'CPU', results, idleMs: 1, train: { results, computeMs: 7 * results, elapsedMs: 8 * results } }));
    const start = process.cpuUsage();
    for (let g = 1; g <= steps; g++) {
      const p = { epoch: 1 + Math.floor((g - 1) / 94), step: 1 + ((g - 1) % 94), stepsPerEpoch: 94, globalStep: g, images: 64, seconds: 0.015, loss: 0.5 };
      monitor.step(p);
      if (monitor.liveWorkersDue(p)) monitor.liveWorkers(live(2 * g), 16);
      // Let timers and the stream run now and then, as between a coordinator's steps.
      if (g % 1000 === 0) await yieldToLoop();
    }
    const cpu = process.cpuUsage(start);
    return (cpu.user + cpu.system) / steps;
  } finally {
    routes?.close();
    metrics?.close();
    abort.abort();
    await reading;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}


/** CPU milliseconds per 1000 training images: the work done per step, comparable across rounds of different speed. */
const perKImages = (cpu: number, r: Round): number => (1e6 * cpu) / r.images;
/** CPU milliseconds per second of the window: what a process that works by the clock (a page redrawing) takes. */
const perSecond = (cpu: number, r: Round): number => (1e3 * cpu) / r.seconds;

export async function benchDashboard(options: { rounds: number }): Promise<void> {
  if (!CHROMIUM) {
    console.log('dashboard: skipped, Debian chromium is not installed (apt-get install -y chromium)');
    return;
  }
  const root = await mkdtemp(join(tmpdir(), 'flock-bench-dashboard-'));
  let browser: Browser | undefined;
  try {
    const dataDir = join(root, 'data');
    await writeSyntheticCifar(dataDir, { trainPerFile: 1200, testCount: 400, seed: 3 });
    browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true, ignoreDefaultArgs: NOT_A_USERS_BROWSER,
      // --no-sandbox: root in a VM; --disable-gpu: this machine has none (software compositing).
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
    const browserPid = browser.process()!.pid!;
    const cores = availableParallelism();
    const micro = { plain: [] as number[], watched: [] as number[] };
    for (let i = 0; i < 5; i++) {
      micro.plain.push(await serverMicroseconds(false, 50_000));
      micro.watched.push(await serverMicroseconds(true, 50_000));
    }
    const byKind = new Map<string, Round[]>();
    const rows: string[][] = [];
    for (let i = 0; i < options.rounds; i++) {
      // Interleaved, so that a change in the machine's load touches every kind alike.
      for (const make of [() => nobody, streamReader, () => pageWatcher(browser!)]) {
        const watcher = await make();
        let r: Round;
        try {
          r = await run(dataDir, join(root, `ck-${rows.length}`), browserPid, watcher);
        } finally {
          await watcher.close();
        }
        // The watcher really followed the run: it drew (or got) updates all through the timed window
        // (the page draws, and the server sends, every 2 s while the run goes on; asked: one per 4 s).
        const least = Math.max(2, Math.floor(r.seconds / 4));
        if (r.updates !== undefined && r.updates < least) throw new Error(`${r.kind}: ${r.updates} updates in the ${r.seconds.toFixed(1)} s window, at least ${least} expected`);
        byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r]);
        rows.push([String(i + 1), r.kind, r.imagesPerSec.toFixed(0), r.seconds.toFixed(2),
          perKImages(r.cpu.coordinator, r).toFixed(1), perKImages(r.cpu.workers, r).toFixed(1), perSecond(r.cpu.chromium, r).toFixed(1),
          ((100 * r.cpu.chromium) / (r.seconds * cores)).toFixed(2), r.updates === undefined ? '-' : String(r.updates), r.load]);
      }
    }
    console.log(`machine: ${thisMachine()}; ${new Date().toISOString()}`);
    console.log(`2 spawned wasm workers, model net, batch 64, ${EPOCHS} epochs of 6000 synthetic images; images/s = mean of epochs 2-${EPOCHS}.`);
    console.log(`CPU read from /proc over the window (end of epoch 1 to end of epoch ${EPOCHS}): coordinator and workers in CPU ms per 1000 training images,`);
    console.log('chromium (all its processes; open all through, on the dashboard only in "page open" rounds) in CPU ms per second and in % of all CPUs.');
    console.log('updates = page redraws, or event-stream batches received, during the window.');
    printTable(['round', 'kind', 'img/s', 'window s', 'coord ms/kimg', 'workers ms/kimg', 'chromium ms/s', 'chromium % of CPUs', 'updates', 'load 1/5/15'], rows);
    const plain = byKind.get(nobody.kind)!;
    const medianOf = (kind: string, f: (r: Round) => number): number => median((byKind.get(kind) ?? []).map(f));
    const rate = (r: Round): number => r.imagesPerSec;
    for (const kind of [...byKind.keys()].filter((k) => k !== nobody.kind)) {
      const ratios = (byKind.get(kind) ?? []).map((r, i) => r.imagesPerSec / plain[i]!.imagesPerSec);
      const ratio = medianOf(kind, rate) / medianOf(nobody.kind, rate);
      console.log(`${kind} / --no-http: per round ${ratios.map((x) => x.toFixed(3)).join(', ')}; medians ${medianOf(kind, rate).toFixed(0)} / ${medianOf(nobody.kind, rate).toFixed(0)} img/s = ${ratio.toFixed(3)} (${((ratio - 1) * 100).toFixed(1)} %)`);
    }
    // What watching adds: the server's part (the coordinator's CPU per 1000 images) and the browser's own (chromium's CPU per second).
    const coordinator = (kind: string): number => medianOf(kind, (r) => perKImages(r.cpu.coordinator, r));
    const base = medianOf(nobody.kind, (r) => perKImages(r.cpu.coordinator + r.cpu.workers, r));
    const server = (kind: string): string => {
      const ms = coordinator(kind) - coordinator(nobody.kind);
      return `${ms.toFixed(1)} ms per 1000 images (${((100 * ms) / base).toFixed(1)} % of the run's ${base.toFixed(0)} ms)`;
    };
    const chromium = (kind: string): number => medianOf(kind, (r) => perSecond(r.cpu.chromium, r));
    const browserMs = chromium('page open') - chromium(nobody.kind);
    console.log(`server (coordinator CPU, medians): stream only - --no-http ${server('stream only')}; page open - --no-http ${server('page open')}`);
    console.log(`browser (chromium CPU, medians): page open - --no-http ${browserMs.toFixed(1)} ms per second = ${(browserMs / (10 * cores)).toFixed(2)} % of the ${cores} CPUs`);
    console.log(`server work per step in-process (monitor, workers table when due; medians of 5 x 50000 synthetic steps): ${median(micro.plain).toFixed(2)} µs CPU with nobody watching,`
      + ` ${median(micro.watched).toFixed(2)} µs with the metrics and an open event stream (at 70 steps/s: ${((70 * median(micro.watched)) / 1e4).toFixed(3)} % of one core)`);
    console.log('on a machine shared with other work these figures are noisy: compare the per-round ratios and CPU figures, and re-measure on a quiet machine');
  } finally {
    await browser?.close();
    await rm(root, { recursive: true, force: true });
  }
}
