// The coordinator command line as users run it: real processes, real files.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { pidExists, signalDescendant } from './signal-child.js';

const CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs the coordinator CLI; `onLine` sees each stdout line as it arrives. */
function coordinator(args: string[], onLine?: (line: string, pid: number | undefined) => void, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, FLOCK_DATA_DIR: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine?.(pending.slice(0, nl), child.pid);
        pending = pending.slice(nl + 1);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const events = (stdout: string): Record<string, unknown>[] =>
  stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('coordinator CLI', () => {
  let root: string;
  let dataDir: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'flock-cli-'));
    dataDir = join(root, 'cifar-10-batches-bin');
    await writeSyntheticCifar(dataDir, { trainPerFile: 100, testCount: 160, seed: 5 });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('--help explains the commands and flags', async () => {
    const top = await coordinator(['--help']);
    assert.equal(top.code, 0);
    for (const cmd of ['start', 'evaluate', 'predict', 'fetch-data']) assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
    const start = await coordinator(['start', '--help']);
    for (const flag of ['--spawn-workers', '--micro-batch', '--weight-decay', '--resume', '--token', '--step-timeout', '--backend']) assert.ok(start.stdout.includes(flag), flag);
  });

  it('rejects bad flags with exit code 2 and says why', async () => {
    const r = await coordinator(['start', '--local', '--epochs', 'zero']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--epochs/);
    const m = await coordinator(['start', '--local', '--model', 'resnet']);
    assert.match(m.stderr, /net-batchnorm/);
  });

  it('names fetch-data when the data folder is missing', async () => {
    const r = await coordinator(['start', '--local', '--data-dir', join(root, 'nowhere')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /fetch-data/);
    assert.match(r.stderr, /ERR_DATA_MISSING/);
  });

  it('trains with 2 spawned workers, checkpoints, exports, then evaluates and predicts', async () => {
    const ck = join(root, 'ck-spawn');
    const pids = new Set<number>();
    const r = await coordinator(['start', '--spawn-workers', '2', '--epochs', '2', '--batch-size', '32', '--lr', '0.05', '--data-dir', dataDir, '--checkpoint-dir', ck, '--backend', 'wasm'], (line) => {
      if (line.includes('"name":"worker"')) pids.add((JSON.parse(line) as { pid: number }).pid);
    });
    assert.equal(r.code, 0, r.stderr);
    const ev = events(r.stdout);
    const epochs = ev.filter((e) => e.event === 'epoch' && e.name === 'coordinator');
    assert.equal(epochs.length, 2);
    for (const key of ['trainLoss', 'trainAccuracy', 'valLoss', 'valAccuracy', 'imagesPerSec', 'workers', 'seconds', 'computeSeconds', 'communicationSeconds', 'waitingSeconds']) assert.ok(key in epochs[1]!, key);
    assert.equal(epochs[1]!.workers, 2);
    assert.ok((epochs[1]!.valAccuracy as number) > 0.9);
    assert.equal(ev.filter((e) => e.event === 'worker_joined').length, 2);
    assert.ok(ev.some((e) => e.event === 'done'));
    assert.equal(pids.size, 2);
    for (const pid of pids) assert.equal(pidExists(pid), false, `worker ${pid} was left running`);
    const files = await readdir(ck);
    assert.ok(files.includes('model'));
    const checkpoint = join(ck, files.filter((f) => f.endsWith('.flock')).sort().at(-1)!);

    const e = await coordinator(['evaluate', '--checkpoint', checkpoint, '--data-dir', dataDir, '--backend', 'cpu']);
    assert.equal(e.code, 0, e.stderr);
    const acc = /validation accuracy: +([0-9.]+) .*?(\d+) images/.exec(e.stdout);
    assert.ok(acc, e.stdout);
    assert.ok(Number(acc[1]) > 0.9);
    assert.equal(Number(acc[2]), 140);

    const p = await coordinator(['predict', '--checkpoint', checkpoint, '--index', '3', '--data-dir', dataDir, '--backend', 'wasm']);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /^(airplane|bird) \(true class: (airplane|bird)\)\n {2}airplane +0\.\d{4}\n {2}bird +0\.\d{4}/);
  });

  it('SIGTERM stops training gracefully: checkpoint written, workers gone, --resume finishes', async () => {
    const ck = join(root, 'ck-term');
    const pids = new Set<number>();
    let sent = false;
    const args = ['start', '--spawn-workers', '2', '--epochs', '3', '--batch-size', '32', '--data-dir', dataDir, '--checkpoint-dir', ck, '--backend', 'wasm'];
    const r = await coordinator(args, (line, pid) => {
      if (line.includes('"name":"worker"')) pids.add((JSON.parse(line) as { pid: number }).pid);
      if (!sent && line.includes('"event":"epoch"') && line.includes('"name":"coordinator"')) {
        sent = true;
        signalDescendant(pid, 'SIGTERM');
      }
    });
    assert.ok(sent);
    assert.equal(r.code, 130, r.stderr);
    assert.ok(events(r.stdout).some((e) => e.event === 'shutdown'));
    for (const pid of pids) assert.equal(pidExists(pid), false, `worker ${pid} was left running`);
    const resumed = await coordinator([...args, '--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    const ev = events(resumed.stdout);
    assert.ok(ev.some((e) => e.event === 'resume' && typeof e.file === 'string'));
    const epochs = ev.filter((e) => e.event === 'epoch').map((e) => e.epoch);
    assert.ok(epochs.length >= 1 && epochs.length < 3, `resumed run trained epochs ${epochs.join(',')}`);
    assert.equal(epochs.at(-1), 3);
  });
});
