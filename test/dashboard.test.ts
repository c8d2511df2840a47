// The coordinator's HTTP side during real 2-worker runs on synthetic data: access control
// and headers, /metrics against the run's epoch log, and the dashboard page in headless
// Debian chromium (puppeteer-core), read through its data attributes.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import puppeteer from 'puppeteer-core';
import { COORDINATOR_CLI, WORKER_CLI, findChromium, parsePrometheus, runCli, sample, type Proc } from './dashboard-tools.js';
import { useSyntheticCifar } from './helpers.js';

const TOKEN = 'dashboard-test-token';
const EPOCHS = 4;
const BATCH = 32;
const chromium = findChromium();
const inCi = process.env.CI === 'true';

interface Run {
  readonly coordinator: Proc;
  readonly http: string;
  readonly ws: string;
  /** Starts the two workers. */
  workers(): Proc[];
}

async function startRun(root: string, dataDir: string, name: string): Promise<Run> {
  const coordinator = runCli(COORDINATOR_CLI, ['start', '--workers', '2', '--epochs', String(EPOCHS), '--batch-size', String(BATCH), '--lr', '0.05',
    '--data-dir', dataDir, '--checkpoint-dir', join(root, name), '--backend', 'wasm', '--token', TOKEN, '--log-format', 'json']);
  const dashboard = await coordinator.waitFor((r) => r.event === 'dashboard');
  const listening = coordinator.records.find((r) => r.event === 'listening')!;
  const ws = listening.url as string;
  return {
    coordinator, ws, http: (dashboard.url as string).replace(/\/$/, ''),
    workers: () => [1, 2].map((i) => runCli(WORKER_CLI, ['--connect', ws, '--token', TOKEN, '--name', `w${i}`, '--backend', 'wasm', '--log-format', 'json'])),
  };
}

const epochRecords = (p: Proc): Record<string, unknown>[] => p.records.filter((r) => r.event === 'epoch');

describe('coordinator HTTP: dashboard, metrics, access', () => {
  const synth = useSyntheticCifar('flock-dashboard-', { trainPerFile: 100, testCount: 160, seed: 5 });

  it('guards every path but /healthz, logs in by cookie, and serves /metrics that agree with the epoch log', async () => {
    const run = await startRun(synth.root, synth.dataDir, 'ck-http');
    let workers: Proc[] = [];
    try {
      for (const path of ['/', '/metrics', '/events', '/readyz', '/app.js']) {
        const r = await fetch(run.http + path);
        assert.equal(r.status, 401, path);
        await r.body?.cancel();
      }
      const health = await fetch(`${run.http}/healthz`);
      assert.equal(health.status, 200);
      assert.equal(await health.text(), 'ok\n');
      const wrong = await fetch(`${run.http}/metrics`, { headers: { Authorization: 'Bearer nope' } });
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();

      const login = await fetch(`${run.http}/?token=${TOKEN}`, { redirect: 'manual' });
      assert.equal(login.status, 303);
      assert.equal(login.headers.get('location'), '/');
      const setCookie = login.headers.get('set-cookie') ?? '';
      assert.match(setCookie, /HttpOnly/);
      assert.match(setCookie, /SameSite=Strict/);
      assert.ok(!setCookie.includes(TOKEN), 'the cookie must not hold the token itself');
      const page = await fetch(`${run.http}/`, { headers: { Cookie: setCookie.split(';')[0]! } });
      assert.equal(page.status, 200);
      const csp = page.headers.get('content-security-policy') ?? '';
      assert.match(csp, /script-src 'self'/);
      assert.ok(!csp.includes('unsafe-inline'));
      assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
      assert.match(await page.text(), /<script type="module" src="\/app.js"><\/script>/);
      const notReady = await fetch(`${run.http}/readyz`, { headers: { Authorization: `Bearer ${TOKEN}` } });
      assert.equal(notReady.status, 503);
      await notReady.body?.cancel();

      workers = run.workers();
      // Scrape during training, right after the second epoch's log line.
      await run.coordinator.waitFor((r) => r.event === 'epoch' && r.epoch === 2);
      const auth = { headers: { Authorization: `Bearer ${TOKEN}` } };
      const ready = await fetch(`${run.http}/readyz`, auth);
      const metrics = await fetch(`${run.http}/metrics`, auth);
      assert.equal(metrics.status, 200);
      assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const { samples, types } = parsePrometheus(await metrics.text());
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      // Ready while training, unless this scrape landed after the last epoch.
      assert.equal(ready.status, sample(samples, 'flock_epoch') < EPOCHS ? 200 : 503);

      for (const [name, type] of [['flock_steps_total', 'counter'], ['flock_images_total', 'counter'], ['flock_epoch', 'gauge'], ['flock_train_loss', 'gauge'],
        ['flock_validation_accuracy', 'gauge'], ['flock_workers', 'gauge'], ['flock_step_duration_seconds', 'histogram'],
        ['flock_reassigned_microbatches_total', 'counter'], ['flock_rejected_frames_total', 'counter'], ['process_cpu_seconds_total', 'counter']]) {
        assert.equal(types.get(name!), type, name);
      }
      const epochs = epochRecords(run.coordinator);
      assert.equal(epochs.length, EPOCHS);
      const e = sample(samples, 'flock_epoch');
      assert.ok(e >= 2, `scraped at epoch ${e}`);
      const logged = epochs[e - 1]!;
      assert.equal(sample(samples, 'flock_train_loss'), logged.trainLoss);
      assert.equal(sample(samples, 'flock_validation_accuracy'), logged.valAccuracy);
      assert.equal(sample(samples, 'flock_validation_loss'), logged.valLoss);
      assert.equal(sample(samples, 'flock_workers'), 2);
      const stepsPerEpoch = logged.steps as number;
      const steps = sample(samples, 'flock_steps_total');
      assert.ok(steps >= e * stepsPerEpoch && steps <= (e + 1) * stepsPerEpoch, `${steps} steps at epoch ${e}`);
      assert.equal(sample(samples, 'flock_images_total'), steps * BATCH);
      assert.equal(sample(samples, 'flock_step_duration_seconds_count'), steps);
      assert.equal(sample(samples, 'flock_step_duration_seconds_bucket', { le: '+Inf' }), steps);
      assert.equal(sample(samples, 'flock_reassigned_microbatches_total'), 0);
    } finally {
      run.coordinator.child.kill();
      for (const w of workers) w.child.kill();
      await Promise.all([run.coordinator.exited, ...workers.map((w) => w.exited)]);
    }
  });

  it('the page in headless chromium shows both workers, one point per epoch and the final accuracy', {
    skip: chromium === undefined && !inCi ? 'Debian chromium is not installed: apt-get install -y chromium (CI=true makes this a failure)' : false,
  }, async () => {
    assert.ok(chromium, 'CI=true needs Debian chromium: apt-get install -y chromium');
    const run = await startRun(synth.root, synth.dataDir, 'ck-browser');
    const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    let workers: Proc[] = [];
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1400, height: 1000 });
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(String(err)));
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      await page.goto(`${run.http}/?token=${TOKEN}`, { waitUntil: 'load' });
      assert.equal(new URL(page.url()).search, '', 'the token is dropped from the address bar');
      await page.waitForSelector('#app[data-connected="true"]');
      // Both workers listed (they stay listed, as gone, after the run ends).
      const bothWorkers = page.waitForFunction(() => (document.getElementById('app')?.dataset.workerNames ?? '').split(',').sort().join() === 'w1,w2', { timeout: 120_000 });
      workers = run.workers();
      await bothWorkers;
      // During the run: as many points as finished epochs (the page redraws at most every 2 s).
      await page.waitForFunction(() => Number(document.getElementById('app')?.dataset.epochs) >= 1, { timeout: 120_000 });
      const during = await page.$eval('#app', (el) => ({ ...(el as HTMLElement).dataset }));
      const seen = Number(during.epochs);
      assert.ok(seen <= epochRecords(run.coordinator).length);
      assert.equal(during.validationAccuracy, epochRecords(run.coordinator).slice(0, seen).map((e) => e.valAccuracy).join(','));
      // Hidden behind another tab, the page draws nothing however much arrives (the rest of
      // the run, and its end); shown again, it draws what it missed.
      const other = await browser.newPage();
      await other.bringToFront();
      const hidden = await page.$eval('#app', (el) => ({ draws: (el as HTMLElement).dataset.draws, visibility: document.visibilityState }));
      assert.equal(hidden.visibility, 'hidden');
      assert.equal(await run.coordinator.exited, 0, run.coordinator.stderr);
      assert.equal(await page.$eval('#app', (el) => (el as HTMLElement).dataset.draws), hidden.draws, 'no draws while hidden');
      await page.bringToFront();
      await page.waitForSelector('#app[data-final-accuracy]', { timeout: 120_000 });
      await other.close();
      const data = await page.$eval('#app', (el) => ({ ...(el as HTMLElement).dataset }));
      const epochs = epochRecords(run.coordinator);
      const done = run.coordinator.records.find((r) => r.event === 'done')!;
      assert.equal(data.epochs, String(EPOCHS));
      assert.equal(data.validationAccuracy, epochs.map((e) => e.valAccuracy).join(','));
      assert.equal(Number(data.finalAccuracy), done.valAccuracy);
      assert.deepEqual(data.workerNames?.split(',').sort(), ['w1', 'w2']);
      assert.equal(data.status, 'done');
      // One point per epoch in each curve, drawn by uPlot from the same data.
      const rows = await page.$$eval('#workers tr[data-worker]', (trs) => trs.map((tr) => ({ ...(tr as HTMLElement).dataset })));
      assert.equal(rows.length, 2);
      // Each worker's adapter as it said in hello (wasm: the CPU), and its compute and
      // communication time per micro-batch.
      for (const row of rows) {
        const joined = run.coordinator.records.find((r) => r.event === 'worker_joined' && r.workerName === row.worker)!;
        assert.match(String(joined.adapter), /^CPU: ./);
        assert.equal(row.adapter, joined.adapter);
        assert.ok(Number(row.computeMs) > 0, `compute ms of ${row.worker}: ${row.computeMs}`);
        assert.ok(Number(row.commMs) >= 0, `comm ms of ${row.worker}: ${row.commMs}`);
      }
      const header = await page.$$eval('#workers th', (ths) => ths.map((th) => th.textContent));
      assert.ok(header.includes('adapter') && header.includes('compute ms/mb') && header.includes('comm ms/mb'), header.join());
      assert.ok(await page.$('#loss-chart canvas'));
      assert.deepEqual(errors, []);
      const shot = join(tmpdir(), `flock-dashboard-${process.pid}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok((await stat(shot)).size > 10_000);
      process.stderr.write(`# dashboard screenshot: ${shot}\n`);
    } finally {
      await browser.close();
      run.coordinator.child.kill();
      for (const w of workers) w.child.kill();
      await Promise.all([run.coordinator.exited, ...workers.map((w) => w.exited)]);
    }
  });
});
