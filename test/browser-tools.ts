// Helpers for the browser-worker tests and bench: headless Debian chromium (puppeteer-core,
// no download), a coordinator child process whose JSON lines are collected, its join link,
// the /join page of a tab, and what the coordinator's debug log says each worker computed.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { COORDINATOR_CLI, WORKER_CLI, findChromium, runCli, type Proc } from './dashboard-tools.js';

/** Flags that work for headless Debian chromium on this machine (no GPU, no network). */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * A fresh headless chromium. `webgpu`: WebGPU on, GPU not disabled; with no GPU, chromium then
 * offers its SwiftShader (software, fallback) adapter.
 */
export async function launchChromium(opts: { webgpu?: boolean } = {}): Promise<{ browser: Browser; close(): Promise<void> }> {
  const executablePath = findChromium();
  if (!executablePath) throw new Error('Debian chromium is not installed: apt-get install -y chromium');
  const userDataDir = await mkdtemp(join(tmpdir(), 'flock-chromium-'));
  const args = opts.webgpu === true ? [...CHROMIUM_ARGS.filter((a) => a !== '--disable-gpu'), '--enable-unsafe-webgpu'] : CHROMIUM_ARGS;
  const browser = await puppeteer.launch({ executablePath, headless: true, userDataDir, args });
  return {
    browser,
    close: async () => {
      await browser.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

export interface CoordinatorRun {
  readonly coordinator: Proc;
  /** ws://host:port */
  readonly ws: string;
  /** http://host:port (no trailing slash) */
  readonly http: string;
  /** The printed join link, with its secret. */
  readonly joinUrl: string;
  readonly checkpointDir: string;
  /** Starts a Node worker process (wasm) with the run's token. */
  nodeWorker(name: string): Proc;
}

/** `coordinator start` on synthetic data, JSON lines at debug level (it logs every accepted result). */
export async function startCoordinator(opts: { dataDir: string; checkpointDir: string; token: string; args: readonly string[] }): Promise<CoordinatorRun> {
  const coordinator = runCli(COORDINATOR_CLI, ['start', '--data-dir', opts.dataDir, '--checkpoint-dir', opts.checkpointDir, '--backend', 'wasm',
    '--token', opts.token, '--log-format', 'json', '--log-level', 'debug', ...opts.args]);
  const link = await coordinator.waitFor((r) => r.event === 'join_link');
  const listening = coordinator.records.find((r) => r.event === 'listening')!;
  const ws = listening.url as string;
  return {
    coordinator, ws, http: ws.replace(/^ws/, 'http'), joinUrl: link.url as string, checkpointDir: opts.checkpointDir,
    nodeWorker: (name) => runCli(WORKER_CLI, ['--connect', ws, '--token', opts.token, '--name', name, '--backend', 'wasm', '--log-format', 'json']),
  };
}

/** Opens the join link in a new tab with extra query parameters (backend, threads, name). */
export async function openJoin(browser: Browser, joinUrl: string, query: Record<string, string>, errors: string[] = []): Promise<Page> {
  const page = await browser.newPage();
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  const url = new URL(joinUrl);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  await page.goto(url.href, { waitUntil: 'load' });
  return page;
}

export const pageData = (page: Page): Promise<Record<string, string | undefined>> =>
  page.$eval('#join', (el) => ({ ...(el as HTMLElement).dataset }));

/** The worker id the coordinator gave the worker called `name`. */
export async function workerIdOf(coordinator: Proc, name: string): Promise<number> {
  const joined = await coordinator.waitFor((r) => r.event === 'worker_joined' && r.workerName === name);
  return joined.workerId as number;
}

/**
 * Accepted training results (micro-batches) per worker id, from the coordinator's debug log:
 * the step's own results, or with `second` also the verifier's second computations (audits).
 */
export function gradientResults(coordinator: Proc, opts: { second?: boolean } = {}): { workerId: number; step: number; unit: number }[] {
  return coordinator.records.filter((r) => r.event === 'result' && r.kind === 'gradients' && (opts.second === true || r.second !== true))
    .map((r) => ({ workerId: r.workerId as number, step: r.key as number, unit: r.unit as number }));
}

/** The final model's weights (the exported weights.bin) as float32. */
export async function finalWeights(checkpointDir: string): Promise<Float32Array> {
  const bytes = await readFile(join(checkpointDir, 'model', 'weights.bin'));
  return new Float32Array(Uint8Array.from(bytes).buffer);
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`weights of different lengths: ${a.length} and ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
