// Where the dashboard is served and what it costs the workers' port: open event streams
// hold no --max-pending slot (so pages never keep a worker out), updates reach a stream in
// batches, and `start --local` serves the same page, /metrics and probes on --port.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { COORDINATOR_CLI, WORKER_CLI, parsePrometheus, runCli, sample, type Proc } from './dashboard-tools.js';
import { useSyntheticCifar } from './helpers.js';

const TOKEN = 'serving-test-token';
const auth = { Authorization: `Bearer ${TOKEN}` };

/** An open event stream and everything it has received so far. */
interface Stream {
  readonly text: string;
  readonly done: Promise<void>;
  cancel(): Promise<void>;
}

async function openStream(url: string): Promise<Stream> {
  // Bounded: a connection the server closes at once (a full --max-pending) must fail the test, not hang it.
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`no answer from ${url}`)), 30_000);
  const res = await fetch(url, { headers: auth, signal: ctl.signal }).finally(() => clearTimeout(timer));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const received = { text: '' };
  const done = (async () => {
    for (;;) {
      const { value, done: end } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (end) return;
      received.text += value;
    }
  })();
  const stream: Stream = {
    get text() {
      return received.text;
    },
    done,
    cancel: () => reader.cancel().catch(() => undefined),
  };
  return stream;
}

/** The data of each `event: name` in a stream's text. */
const eventsNamed = (text: string, name: string): unknown[] =>
  text.split('\n\n').filter((b) => b.startsWith(`event: ${name}\n`)).map((b) => JSON.parse(b.slice(b.indexOf('data: ') + 6)) as unknown);

describe('dashboard serving', () => {
  const synth = useSyntheticCifar('flock-serving-', { trainPerFile: 100, testCount: 160, seed: 5 });

  it('open event streams hold no --max-pending slot: with --max-pending 2, four pages do not keep a worker out', { timeout: 180_000 }, async () => {
    const coordinator = runCli(COORDINATOR_CLI, ['start', '--workers', '1', '--epochs', '2', '--batch-size', '32', '--data-dir', synth.dataDir,
      '--checkpoint-dir', join(synth.root, 'ck-pending'), '--backend', 'wasm', '--token', TOKEN, '--log-format', 'json', '--max-pending', '2']);
    let worker: Proc | undefined;
    const streams: Stream[] = [];
    try {
      const dashboard = await coordinator.waitFor((r) => r.event === 'dashboard');
      const ws = coordinator.records.find((r) => r.event === 'listening')!.url as string;
      // One after the other, each on its own connection (the others are busy streaming): a
      // stream that kept its slot would get the third connection closed at once.
      for (let i = 0; i < 4; i++) streams.push(await openStream(`${dashboard.url as string}events`));
      worker = runCli(WORKER_CLI, ['--connect', ws, '--token', TOKEN, '--name', 'w1', '--backend', 'wasm', '--log-format', 'json']);
      await coordinator.waitFor((r) => r.event === 'worker_joined');
      assert.equal(await coordinator.exited, 0, coordinator.stderr);
      await Promise.all(streams.map((s) => s.done));
      assert.equal(coordinator.records.filter((r) => r.event === 'connection_refused').length, 0);
      const steps = coordinator.records.find((r) => r.event === 'epoch')!.steps as number;
      for (const s of streams) {
        assert.equal(eventsNamed(s.text, 'snapshot').length, 1);
        // Per-step updates arrive in batches ('steps'), never one event per step.
        const batches = eventsNamed(s.text, 'updates') as { type: string; steps?: unknown[] }[][];
        assert.equal(eventsNamed(s.text, 'update').length, 0);
        const stepPoints = batches.flat().filter((u) => u.type === 'steps').reduce((n, u) => n + u.steps!.length, 0);
        assert.equal(stepPoints, 2 * steps);
        assert.ok(batches.flat().some((u) => u.type === 'status' && (u as unknown as { status: string }).status === 'done'));
      }
    } finally {
      for (const s of streams) await s.cancel();
      coordinator.child.kill();
      worker?.child.kill();
      await Promise.all([coordinator.exited, worker?.exited]);
    }
  });

  it('start --local serves /, /metrics, /healthz and /readyz on --port', async () => {
    const coordinator = runCli(COORDINATOR_CLI, ['start', '--local', '--epochs', '50', '--batch-size', '32', '--data-dir', synth.dataDir,
      '--checkpoint-dir', join(synth.root, 'ck-local'), '--backend', 'wasm', '--token', TOKEN, '--log-format', 'json']);
    try {
      const dashboard = await coordinator.waitFor((r) => r.event === 'dashboard');
      const url = dashboard.url as string;
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const health = await fetch(`${url}healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const denied = await fetch(`${url}metrics`);
      assert.equal(denied.status, 401);
      await denied.body?.cancel();
      const first = await coordinator.waitFor((r) => r.event === 'epoch');
      const ready = await fetch(`${url}readyz`, { headers: auth });
      assert.equal(ready.status, 200, 'ready while training in this process (no workers needed)');
      await ready.body?.cancel();
      const page = await fetch(url, { headers: auth });
      assert.equal(page.status, 200);
      assert.match(await page.text(), /src="\/app.js"/);
      const metrics = await fetch(`${url}metrics`, { headers: auth });
      const { samples } = parsePrometheus(await metrics.text());
      assert.ok(sample(samples, 'flock_epoch') >= 1);
      assert.ok(sample(samples, 'flock_steps_total') >= (first.steps as number));
      assert.ok(sample(samples, 'process_cpu_seconds_total') > 0);
    } finally {
      coordinator.child.kill();
      await coordinator.exited;
    }
  });
});
