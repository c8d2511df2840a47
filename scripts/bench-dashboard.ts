// Benchmark section `dashboard` (used by scripts/bench.ts): what watching a run costs it.
// `coordinator start --spawn-workers 2` on synthetic data, in alternating rounds: with
// --no-http, then with HTTP on and the dashboard open in headless Debian chromium
// (puppeteer-core) with its event stream live. Throughput is the mean training images/s of
// the epochs after the first (the first ships the samples to the workers). Prints every
// round, the medians and the ratio of each pair of rounds.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser } from 'puppeteer-core';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { printTable } from './bench-distributed.js';
import { machineName } from './peer-report.js';

const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));
const TOKEN = 'bench-dashboard';
const EPOCHS = 4;
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

type LogRecord = Record<string, unknown>;

/** One coordinator run; `onDashboard` is awaited when the page's address is logged. */
async function run(dataDir: string, checkpointDir: string, http: boolean, onDashboard: (url: string) => Promise<void>): Promise<number> {
  const args = [COORDINATOR_CLI, 'start', '--spawn-workers', '2', '--epochs', String(EPOCHS), '--batch-size', '64', '--lr', '0.05',
    '--data-dir', dataDir, '--checkpoint-dir', checkpointDir, '--backend', 'wasm', '--token', TOKEN, '--log-format', 'json', ...(http ? [] : ['--no-http'])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLOCK_DATA_DIR: '', FLOCK_TOKEN: '' } });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const epochs: LogRecord[] = [];
  let opened: Promise<void> = Promise.resolve();
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const r = JSON.parse(line) as LogRecord;
    if (r.name !== 'coordinator') return;
    if (r.event === 'epoch') epochs.push(r);
    if (r.event === 'dashboard') opened = onDashboard(r.url as string);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  await opened;
  if (code !== 0) throw new Error(`coordinator exited ${code}: ${stderr}`);
  const measured = epochs.slice(1).map((e) => e.imagesPerSec as number);
  return measured.reduce((a, b) => a + b, 0) / measured.length;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

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
    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    const rows: string[][] = [];
    const plain: number[] = [];
    const watched: number[] = [];
    for (let i = 0; i < options.rounds; i++) {
      plain.push(await run(dataDir, join(root, `ck-${i}-plain`), false, () => Promise.resolve()));
      const page = await browser.newPage();
      try {
        let updates = 0;
        watched.push(await run(dataDir, join(root, `ck-${i}-page`), true, async (url) => {
          await page.goto(`${url}?token=${TOKEN}`, { waitUntil: 'load' });
          await page.waitForSelector('#app[data-connected="true"]');
        }));
        // The page followed the run to its end.
        updates = Number(await page.$eval('#app', (el) => (el as HTMLElement).dataset.steps));
        if (!(updates > 0)) throw new Error('the page saw no steps');
      } finally {
        await page.close();
      }
      rows.push([String(i + 1), plain[i]!.toFixed(0), watched[i]!.toFixed(0), (watched[i]! / plain[i]!).toFixed(3)]);
    }
    let cpuinfo = '';
    try {
      cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      // Not Linux: os.cpus() names the model.
    }
    console.log(`machine: ${machineName(cpuinfo, cpus()[0]?.model ?? '', availableParallelism())}; ${new Date().toISOString()}`);
    console.log(`2 spawned wasm workers, model net, batch 64, ${EPOCHS} epochs of 6000 synthetic images; images/s = mean of epochs 2-${EPOCHS}`);
    printTable(['round', '--no-http img/s', 'page open img/s', 'ratio'], rows);
    const ratio = median(watched) / median(plain);
    console.log(`median: --no-http ${median(plain).toFixed(0)} img/s, page open ${median(watched).toFixed(0)} img/s, ratio ${ratio.toFixed(3)} (${((ratio - 1) * 100).toFixed(1)} %)`);
    console.log('on a machine shared with other work these figures are noisy: compare the per-round ratios, and re-measure on a quiet machine');
  } finally {
    await browser?.close();
    await rm(root, { recursive: true, force: true });
  }
}
