// After the run: `report` draws the log's epoch curves into a PNG (checked through the data
// the renderer was given and the image's size), `dashboard --log` serves the page's data.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PNG } from 'pngjs';
import { curvesOf } from '../coordinator/report/curves.js';
import { renderPanels } from '../coordinator/report/render-png.js';
import { replayLog } from '../coordinator/report/run-log.js';
import { COORDINATOR_CLI } from './dashboard-tools.js';

const epochRecord = (epoch: number): Record<string, unknown> => ({
  level: 30, time: 1_800_000_000_000 + epoch * 1000, pid: 1, hostname: 'h', name: 'coordinator', epoch, event: 'epoch', steps: 13,
  trainLoss: 0.5 / epoch, trainAccuracy: 0.6 + epoch * 0.05, valLoss: 0.6 / epoch, valAccuracy: 0.55 + epoch * 0.06,
  imagesPerSec: 900 + 37 * epoch, workers: 2, seconds: 1.5, computeSeconds: 1, communicationSeconds: 0.3, waitingSeconds: 0.1, msg: `epoch ${epoch}`,
});

describe('report and dashboard from a finished log', () => {
  let root: string;
  let log: string;
  const epochs = [1, 2, 3, 4, 5].map(epochRecord);
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'flock-report-'));
    log = join(root, 'run.jsonl');
    const lines = [
      { level: 30, time: 1_800_000_000_000, name: 'coordinator', event: 'config', model: 'net', epochs: 5, batchSize: 32, msg: 'training configuration' },
      { level: 30, time: 1_800_000_000_001, name: 'worker', event: 'epoch', epoch: 99, msg: 'a worker line, ignored' },
      ...epochs,
      { level: 30, time: 1_800_000_006_000, name: 'coordinator', event: 'done', valAccuracy: epochs[4]!.valAccuracy, msg: 'training complete' },
    ];
    await writeFile(log, `${lines.map((l) => JSON.stringify(l)).join('\n')}\nnot json\n`);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('plots exactly the log\'s epoch values, at the requested size', async () => {
    const run = (await replayLog(log)).snapshot();
    const panels = curvesOf([run]);
    const { png, plotted } = renderPanels(panels, { width: 900, height: 300 });
    const image = PNG.sync.read(png);
    assert.equal(image.width, 900);
    assert.equal(image.height, 300);
    const byTitle = Object.fromEntries(plotted.map((p) => [p.title, Object.fromEntries(p.series.map((s) => [s.label, s]))]));
    const x = epochs.map((e) => e.epoch);
    assert.deepEqual(byTitle.loss!.train!.x, x);
    assert.deepEqual(byTitle.loss!.train!.y, epochs.map((e) => e.trainLoss));
    assert.deepEqual(byTitle.loss!.validation!.y, epochs.map((e) => e.valLoss));
    assert.deepEqual(byTitle.accuracy!.train!.y, epochs.map((e) => e.trainAccuracy));
    assert.deepEqual(byTitle.accuracy!.validation!.y, epochs.map((e) => e.valAccuracy));
    assert.deepEqual(byTitle['images/s']!['images/s']!.y, epochs.map((e) => e.imagesPerSec));
    // Every series' colour is on the image (drawn, not just listed).
    const colours = new Set<string>();
    for (let i = 0; i < image.data.length; i += 4) colours.add(`${image.data[i]},${image.data[i + 1]},${image.data[i + 2]}`);
    for (const panel of panels) for (const s of panel.series) assert.ok(colours.has(s.color.join(',')), s.label);
  });

  it('`coordinator report` writes the PNG; `coordinator dashboard --log` serves the run', async () => {
    const out = join(root, 'curves.png');
    const report = spawn(process.execPath, [COORDINATOR_CLI, 'report', '--log', log, '--out', out, '--width', '800', '--height', '250'], { stdio: 'ignore' });
    assert.equal(await new Promise((resolve) => report.on('close', resolve)), 0);
    const image = PNG.sync.read(await readFile(out));
    assert.deepEqual([image.width, image.height], [800, 250]);

    const other = join(root, 'other.jsonl');
    await writeFile(other, `${epochs.slice(0, 3).map((e) => JSON.stringify({ ...e, valAccuracy: (e.valAccuracy as number) / 2 })).join('\n')}\n`);
    const dash = spawn(process.execPath, [COORDINATOR_CLI, 'dashboard', '--log', log, '--log', other, '--port', '0', '--token', 't0k'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let text = '';
        dash.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          text += chunk;
          const m = / on (http:\/\/\S+\/) /.exec(text);
          if (m) resolve(m[1]!);
        });
        dash.on('close', (code) => reject(new Error(`dashboard exited (${code})`)));
      });
      const denied = await fetch(`${url}api/snapshot`);
      assert.equal(denied.status, 401);
      await denied.body?.cancel();
      const r = await fetch(`${url}api/snapshot`, { headers: { Authorization: 'Bearer t0k' } });
      assert.equal(r.status, 200);
      const snap = await r.json() as { status: string; finalAccuracy: number; epochs: { valAccuracy: number }[]; others: { label: string; epochs: { valAccuracy: number }[] }[] };
      assert.equal(snap.others.length, 1);
      assert.equal(snap.others[0]!.label, 'other.jsonl');
      assert.deepEqual(snap.others[0]!.epochs.map((e) => e.valAccuracy), epochs.slice(0, 3).map((e) => (e.valAccuracy as number) / 2));
      assert.equal(snap.status, 'done');
      assert.deepEqual(snap.epochs.map((e) => e.valAccuracy), epochs.map((e) => e.valAccuracy));
      assert.equal(snap.finalAccuracy, epochs[4]!.valAccuracy);
    } finally {
      const closed = new Promise((resolve) => dash.on('close', resolve));
      dash.kill('SIGTERM');
      await closed;
    }
  });
});
