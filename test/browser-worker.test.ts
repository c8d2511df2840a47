// Browser workers: headless Debian chromium opens the coordinator's join link and trains
// with the fleet (the same worker session as Node, bundled for the browser). Runs on
// synthetic data with a Node worker beside the tab; the coordinator's debug log says which
// worker computed which micro-batch of which step.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'puppeteer-core';
import WebSocket from 'ws';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { findChromium, type Proc } from './dashboard-tools.js';
import {
  finalWeights, gradientResults, launchChromium, maxAbsDiff, openJoin, pageData, startCoordinator, workerIdOf, type CoordinatorRun,
} from './browser-tools.js';

const TOKEN = 'browser-test-token';
/** 440 training images: 13 steps of 32 an epoch, each 2 micro-batches of 16. */
const RUN = ['--workers', '2', '--epochs', '2', '--batch-size', '32', '--micro-batch', '16', '--lr', '0.05', '--seed', '3'];
const chromium = findChromium();
const inCi = process.env.CI === 'true';
const skip = chromium === undefined && !inCi ? 'Debian chromium is not installed: apt-get install -y chromium (CI=true makes this a failure)' : false;

/** What a WebSocket upgrade with these headers is answered: 101 or the HTTP status. */
function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      resolve(res.statusCode ?? 0);
    });
    ws.on('error', (err) => {
      if (!/Unexpected server response|closed before/.test(err.message)) reject(err);
    });
  });
}

describe('browser workers (/join in headless chromium)', { skip }, () => {
  let root: string;
  let dataDir: string;
  let chrome: { browser: Browser; close(): Promise<void> } | undefined;
  let browser: Browser;
  const procs: Proc[] = [];
  let reference: Promise<Float32Array> | undefined;

  before(async () => {
    assert.ok(chromium, 'CI=true needs Debian chromium: apt-get install -y chromium');
    root = await mkdtemp(join(tmpdir(), 'flock-browser-'));
    dataDir = join(root, 'cifar-10-batches-bin');
    await writeSyntheticCifar(dataDir, { trainPerFile: 100, testCount: 160, seed: 5 });
    chrome = await launchChromium();
    browser = chrome.browser;
  });
  after(async () => {
    await chrome?.close();
    for (const p of procs) p.child.kill();
    await Promise.all(procs.map((p) => p.exited));
    await rm(root, { recursive: true, force: true });
  });

  const start = async (name: string, args = RUN): Promise<CoordinatorRun> => {
    const run = await startCoordinator({ dataDir, checkpointDir: join(root, name), token: TOKEN, args });
    procs.push(run.coordinator);
    return run;
  };
  const nodeWorker = (run: CoordinatorRun, name: string): Proc => {
    const w = run.nodeWorker(name);
    procs.push(w);
    return w;
  };
  /** The same run with two Node workers only: the weights every run here must end with. */
  const nodeOnlyWeights = (): Promise<Float32Array> => {
    reference ??= (async () => {
      const run = await start('ck-node-only');
      nodeWorker(run, 'n1');
      nodeWorker(run, 'n2');
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      return finalWeights(run.checkpointDir);
    })();
    return reference;
  };

  it('a tab joins beside a Node worker: the run completes and learns, and both computed micro-batches', async () => {
    const run = await start('ck-mixed');
    nodeWorker(run, 'node');
    const errors: string[] = [];
    const page = await openJoin(browser, run.joinUrl, { backend: 'wasm-st', name: 'tab' }, errors);
    try {
      assert.equal(new URL(page.url()).searchParams.has('k'), false, 'the join secret is dropped from the address bar');
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      const records = run.coordinator.records;
      const tab = records.find((r) => r.event === 'worker_joined' && r.workerName === 'tab')!;
      const node = records.find((r) => r.event === 'worker_joined' && r.workerName === 'node')!;
      assert.equal(tab.backend, 'wasm (1 thread)');
      assert.equal(tab.adapter, 'tfjs-backend-wasm, SIMD, 1 thread, Flock kernels', 'hello carries the tab\'s adapter (protocol 4)');
      const results = gradientResults(run.coordinator);
      const byTab = results.filter((r) => r.workerId === tab.workerId).length;
      const byNode = results.filter((r) => r.workerId === node.workerId).length;
      assert.ok(byTab > 0 && byNode > 0, `micro-batches: tab ${byTab}, node ${byNode}`);
      assert.equal(byTab + byNode, 2 * 13 * 2);
      const done = records.find((r) => r.event === 'done')!;
      assert.ok((done.valAccuracy as number) > 0.9, `validation accuracy ${String(done.valAccuracy)}`);
      // The page shows what it did: the coordinator's stop, its backend, its micro-batches.
      await page.waitForFunction(() => document.getElementById('join')?.dataset.state === 'stopped');
      const shown = await pageData(page);
      assert.equal(shown.backend, 'wasm (1 thread)');
      // The page counts every micro-batch it computed, audits included.
      assert.equal(Number(shown.microBatches), gradientResults(run.coordinator, { second: true }).filter((r) => r.workerId === tab.workerId).length);
      assert.equal((await page.$eval('#f-adapter', (el) => el.textContent)), 'tfjs-backend-wasm, SIMD, 1 thread, Flock kernels');
      assert.deepEqual(errors, []);
      // Single-threaded wasm in the tab is the build Node runs: bit-identical weights.
      const weights = await finalWeights(run.checkpointDir);
      assert.deepEqual(weights, await nodeOnlyWeights());
    } finally {
      await page.close();
    }
  });

  it('--wire-precision float16: the tab decodes binary16 weights and sends binary16 gradients; weights equal the Node-only float16 run', async () => {
    const half = [...RUN, '--wire-precision', 'float16'];
    const nodeOnly = await start('ck-half-node', half);
    nodeWorker(nodeOnly, 'h1');
    nodeWorker(nodeOnly, 'h2');
    assert.equal(await nodeOnly.coordinator.exited, 0, nodeOnly.coordinator.stderr);
    const run = await start('ck-half-mixed', half);
    nodeWorker(run, 'node');
    const errors: string[] = [];
    const page = await openJoin(browser, run.joinUrl, { backend: 'wasm-st', name: 'half-tab' }, errors);
    try {
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      const tab = run.coordinator.records.find((r) => r.event === 'worker_joined' && r.workerName === 'half-tab')!;
      assert.ok(gradientResults(run.coordinator).some((r) => r.workerId === tab.workerId), 'the tab computed micro-batches');
      assert.deepEqual(errors, []);
      // Lossy against float32, but the same bytes whichever worker (tab or Node, same wasm build) computes.
      assert.deepEqual(await finalWeights(run.checkpointDir), await finalWeights(nodeOnly.checkpointDir));
    } finally {
      await page.close();
    }
  });

  it('multi-threaded wasm in a cross-origin-isolated tab: weights within a stated bound of the Node-only run', async () => {
    const run = await start('ck-threaded');
    nodeWorker(run, 'node');
    const errors: string[] = [];
    const page = await openJoin(browser, run.joinUrl, { backend: 'wasm', threads: '2', name: 'threaded' }, errors);
    try {
      assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'COOP and COEP make the page cross-origin isolated');
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      const tab = run.coordinator.records.find((r) => r.event === 'worker_joined' && r.workerName === 'threaded')!;
      assert.match(tab.backend as string, /^wasm \(\d+ threads?\)$/);
      assert.ok(gradientResults(run.coordinator).some((r) => r.workerId === tab.workerId));
      assert.deepEqual(errors, []);
      // The threaded build may split XNNPACK's convolution (the first layer's) over threads
      // and so change the order of float32 sums: not promised bit-identical, but close.
      const diff = maxAbsDiff(await finalWeights(run.checkpointDir), await nodeOnlyWeights());
      process.stderr.write(`# threaded wasm (${String(tab.backend)}): max |Δw| vs Node-only after 26 steps = ${diff}\n`);
      assert.ok(diff <= 1e-3, `max weight difference ${diff}`);
    } finally {
      await page.close();
    }
  });

  it('closing the tab mid-step: the step completes on the Node worker, nothing lost or counted twice', async () => {
    const run = await start('ck-close');
    nodeWorker(run, 'node');
    const page = await openJoin(browser, run.joinUrl, { backend: 'wasm-st', name: 'closing' });
    const tabId = await workerIdOf(run.coordinator, 'closing');
    await run.coordinator.waitFor((r) => r.event === 'result' && r.workerId === tabId && r.kind === 'gradients');
    // Slow the tab 100x so that the micro-batch it is handed next is surely still computing when it closes.
    const cdp = await page.createCDPSession();
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: 100 });
    const from = run.coordinator.records.length;
    const assigned = await run.coordinator.waitFor((r) => run.coordinator.records.indexOf(r) >= from && r.event === 'assigned' && r.workerId === tabId && r.kind === 'gradients');
    await page.close();
    const left = await run.coordinator.waitFor((r) => r.event === 'worker_left' && r.workerId === tabId);
    assert.deepEqual(left.reassigned, assigned.units, `${String(left.reason)}`);
    assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
    // Every micro-batch of every step accepted exactly once, and the weights of an undisturbed run.
    const perStep = new Map<number, number[]>();
    for (const r of gradientResults(run.coordinator)) perStep.set(r.step, [...(perStep.get(r.step) ?? []), r.unit]);
    assert.equal(perStep.size, 26);
    for (const [step, units] of perStep) assert.deepEqual(units.sort(), [0, 1], `step ${step}`);
    const reassignedStep = assigned.key as number;
    assert.ok(gradientResults(run.coordinator).some((r) => r.step === reassignedStep && r.workerId !== tabId), 'the other worker finished the step');
    assert.deepEqual(await finalWeights(run.checkpointDir), await nodeOnlyWeights());
  });

  it("webgpu: auto skips chromium's software adapter for wasm; ?backend=webgpu computes gradients the coordinator accepts", async () => {
    const gpu = await launchChromium({ webgpu: true });
    try {
      // A slow software adapter compiles its shaders on the first micro-batch: a generous deadline.
      const run = await start('ck-webgpu', ['--workers', '2', '--epochs', '8', '--batch-size', '32', '--micro-batch', '8', '--lr', '0.05', '--step-timeout-floor', '120000']);
      nodeWorker(run, 'node');
      const auto = await openJoin(gpu.browser, run.joinUrl, { name: 'auto' });
      await auto.waitForFunction(() => document.getElementById('join')?.dataset.backend !== undefined);
      assert.match((await pageData(auto)).backend ?? '', /^wasm /);
      assert.match(await auto.$eval('#log', (el) => el.textContent ?? ''), /backend skipped: webgpu: software adapter only/);
      const errors: string[] = [];
      const webgpu = await openJoin(gpu.browser, run.joinUrl, { backend: 'webgpu', name: 'webgpu' }, errors);
      const id = await workerIdOf(run.coordinator, 'webgpu');
      const joined = run.coordinator.records.find((r) => r.event === 'worker_joined' && r.workerId === id)!;
      assert.equal(joined.backend, 'webgpu');
      assert.match(await webgpu.$eval('#f-adapter', (el) => el.textContent ?? ''), /software/);
      // Accepted: right shapes, finite values, for a micro-batch it was assigned.
      await run.coordinator.waitFor((r) => r.event === 'result' && r.workerId === id && r.kind === 'gradients');
      await webgpu.close();
      assert.deepEqual(errors, []);
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      const done = run.coordinator.records.find((r) => r.event === 'done')!;
      assert.ok((done.valAccuracy as number) > 0.9, `validation accuracy ${String(done.valAccuracy)}`);
    } finally {
      await gpu.close();
    }
  });

  it('Stop leaves cleanly; without the join secret, or from another Origin: refused; the coordinator keeps training', async () => {
    const run = await start('ck-refused', ['--workers', '1', '--epochs', '60', '--batch-size', '32', '--micro-batch', '8', '--lr', '0.05']);
    nodeWorker(run, 'node');
    await run.coordinator.waitFor((r) => r.event === 'epoch' && r.epoch === 1);
    // A tab joins mid-run, computes, and leaves with a normal close when Stop is pressed.
    const tab = await openJoin(browser, run.joinUrl, { backend: 'wasm-st', name: 'stopper' });
    const tabId = await workerIdOf(run.coordinator, 'stopper');
    await run.coordinator.waitFor((r) => r.event === 'result' && r.workerId === tabId);
    await tab.click('#stop');
    const left = await run.coordinator.waitFor((r) => r.event === 'worker_left' && r.workerId === tabId);
    assert.match(left.reason as string, /\(1000: worker shutting down\)/);
    await tab.waitForFunction(() => document.getElementById('join')?.dataset.state === 'stopped');
    await tab.close();
    for (const path of ['/join', '/join?k=wrong-secret', '/join/status', '/join/join.js', '/join/wasm/flock_kernels.wasm']) {
      const r = await fetch(run.http + path, { redirect: 'manual' });
      assert.equal(r.status, 401, path);
      await r.body?.cancel();
    }
    // A tab without the secret is told what to open. (A fresh context: cookies are per host, not
    // per port, and the other tests' tabs hold a join cookie for 127.0.0.1 of the same token.)
    const fresh = await browser.createBrowserContext();
    const stranger = await fresh.newPage();
    const answer = await stranger.goto(`${run.http}/join`);
    assert.equal(answer?.status(), 401);
    assert.match(await stranger.$eval('body', (el) => el.textContent ?? ''), /open the join link the coordinator printed/);
    await stranger.close();
    // The link trades the secret for an HttpOnly, SameSite=Strict cookie (not the token, nor the secret).
    const secret = new URL(run.joinUrl).searchParams.get('k')!;
    assert.ok(!run.joinUrl.includes(TOKEN));
    const login = await fetch(run.joinUrl, { redirect: 'manual' });
    assert.equal(login.status, 303);
    assert.equal(login.headers.get('location'), '/join');
    const setCookie = login.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.ok(!setCookie.includes(TOKEN) && !setCookie.includes(secret));
    const cookie = setCookie.split(';')[0]!;
    const page = await fetch(`${run.http}/join`, { headers: { Cookie: cookie } });
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(page.headers.get('cross-origin-embedder-policy'), 'require-corp');
    await page.body?.cancel();
    // Upgrades: the cookie from the coordinator's own origin is let in; a foreign Origin, or no cookie, is not.
    assert.equal(await upgradeStatus(run.ws, { Cookie: cookie, Origin: run.http }), 101);
    assert.equal(await upgradeStatus(run.ws, { Cookie: cookie, Origin: 'http://evil.example' }), 401);
    assert.equal(await upgradeStatus(run.ws, { Authorization: `Bearer ${TOKEN}`, Origin: 'http://evil.example' }), 401);
    assert.equal(await upgradeStatus(run.ws, { Origin: run.http }), 401);
    assert.equal(await upgradeStatus(run.ws, { Cookie: `flock_join=${secret}`, Origin: run.http }), 401);
    // Script of another origin in the browser cannot connect.
    const other = await fresh.newPage();
    const code = await other.evaluate((url) => new Promise<number>((resolve) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(0);
      ws.onclose = (e) => resolve(e.code);
    }), run.ws);
    await fresh.close();
    assert.equal(code, 1006);
    const epochsThen = run.coordinator.records.filter((r) => r.event === 'epoch').length;
    assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
    const epochs = run.coordinator.records.filter((r) => r.event === 'epoch');
    assert.equal(epochs.length, 60);
    assert.ok(epochsThen < 60, 'the refusals happened while training');
    const refused = run.coordinator.records.filter((r) => r.event === 'unauthorized').reduce((n, r) => n + (r.count as number), 0);
    assert.ok(refused >= 5, `${refused} upgrades logged as refused`);
  });
});
