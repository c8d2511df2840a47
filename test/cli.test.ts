// The coordinator and worker command lines as users run them: real processes, real files.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { watch } from 'node:fs';
import { mkdtemp, readdir, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { allowedCpus } from '../coordinator/cpu-binding.js';
import { COORDINATOR_CLI, WORKER_CLI, reap, spawnNode, type Proc } from './child-procs.js';
import { pidExists, signalDescendant } from './signal-child.js';
import { useSyntheticCifar } from './helpers.js';

const CLI = COORDINATOR_CLI;

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
  const synth = useSyntheticCifar('flock-cli-', { trainPerFile: 100, testCount: 160, seed: 5 });

  it('--help explains the commands and flags', async () => {
    const top = await coordinator(['--help']);
    assert.equal(top.code, 0);
    for (const cmd of ['start', 'evaluate', 'predict', 'fetch-data']) assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
    const start = await coordinator(['start', '--help']);
    for (const flag of ['--spawn-workers', '--micro-batch', '--weight-decay', '--resume', '--token', '--step-timeout', '--backend']) assert.ok(start.stdout.includes(flag), flag);
  });

  it('rejects bad flags with exit code 2 and says why', async () => {
    const cases: [string[], RegExp][] = [
      [['start', '--local', '--epochs', 'zero'], /option '--epochs <n>' argument 'zero' is invalid/], // bad value
      [['start', '--local', '--model', 'resnet'], /net-batchnorm/], // not one of the choices
      [['start', '--no-such-flag'], /unknown option '--no-such-flag'/], // unknown flag
      [['start', '--local', '--epochs'], /option '--epochs <n>' argument missing/], // missing argument
      [['evaluate'], /required option '--checkpoint <file>' not specified/], // missing required option
      [['fetch-data', '--dir'], /option '--dir <dir>' argument missing/],
      [['no-such-command'], /unknown command 'no-such-command'/],
      [[], /Usage: coordinator/], // no command
      [['start', '--local', '--spawn-workers', '2'], /--local trains in this process.*\[ERR_BAD_OPTION\]/], // Flock's own check
      [['start', '--bind-workers'], /--bind-workers binds the workers this coordinator spawns.*\[ERR_BAD_OPTION\]/],
    ];
    const runs = await Promise.all(cases.map(([args]) => coordinator(args)));
    runs.forEach((r, i) => {
      const [args, message] = cases[i]!;
      assert.equal(r.code, 2, `coordinator ${args.join(' ')}: exit ${r.code}, stderr ${r.stderr}`);
      assert.match(r.stderr, message, `coordinator ${args.join(' ')}`);
    });
    assert.equal((await coordinator(['start', '--help'])).code, 0);
  });

  it('the worker rejects bad flags with exit code 2 and says why', async () => {
    const url = 'ws://127.0.0.1:9';
    const cases: [string[], RegExp][] = [
      [[], /required option '--connect <url>' not specified/], // missing required option
      [['--connect'], /option '--connect <url>' argument missing/], // missing argument
      [['--connect', url, '--no-such-flag'], /unknown option '--no-such-flag'/], // unknown flag
      [['--connect', url, '--give-up-after', 'soon'], /option '--give-up-after <ms>' argument 'soon' is invalid/], // bad value
      [['--connect', url, '--backend', 'abacus'], /Allowed choices are auto/], // not one of the choices
      [['--connect', 'http://127.0.0.1:9'], /ws:\/\/ or wss:\/\/.*\[ERR_BAD_OPTION\]/], // Flock's own check
    ];
    const procs = cases.map(([args], i) => spawnNode(`worker-${i}`, WORKER_CLI, args));
    const exits = await Promise.all(procs.map((p) => p.exited));
    exits.forEach((e, i) => {
      const [args, message] = cases[i]!;
      assert.equal(e.code, 2, `worker ${args.join(' ')}: exit ${e.code}, stderr ${procs[i]!.stderr()}`);
      assert.match(procs[i]!.stderr(), message, `worker ${args.join(' ')}`);
    });
  });

  // The timeout only bounds a failure (a download that ignores the signal stalls forever).
  it('fetch-data stopped by SIGINT mid-download exits 130 and leaves nothing behind', { timeout: 120_000 }, async () => {
    // A server that promises 4 MB, sends 64 KB and then stalls until the client goes away.
    const sent = 64 * 1024;
    let clientGone!: () => void;
    const gone = new Promise<void>((resolve) => (clientGone = resolve));
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-gzip', 'content-length': 4 * 1024 * 1024 });
      res.write(Buffer.alloc(sent, 7));
      res.on('close', clientGone);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const parent = await mkdtemp(join(synth.root, 'fetch-int-'));
    await writeFile(join(parent, 'keep.txt'), 'pre-existing');
    const watcher = watch(parent);
    let p: Proc | undefined;
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/cifar-10-binary.tar.gz`;
      p = spawnNode('fetch-data', COORDINATOR_CLI, ['fetch-data', '--dir', join(parent, 'cifar-10-batches-bin'), '--url', url, '--log-format', 'json']);
      // Interrupt once the partial archive holds everything the server sent (waiting on the folder, not a clock).
      const partial = async (): Promise<string | undefined> => {
        for (const f of await readdir(parent)) {
          if (f.endsWith('.part') && (await stat(join(parent, f)).catch(() => undefined))?.size === sent) return f;
        }
        return undefined;
      };
      let part = await partial();
      while (part === undefined) {
        await Promise.race([once(watcher, 'change'), p.exited]);
        assert.ok(p.running(), `fetch-data ended before the interrupt: ${p.output()}`);
        part = await partial();
      }
      signalDescendant(p.proc.pid, 'SIGINT');
      const exit = await p.exited;
      assert.equal(exit.code, 130, p.output());
      await gone; // the download's connection was closed, not left open
      assert.ok(p.log.events.some((e) => e.event === 'shutdown' && e.signal === 'SIGINT'), p.output());
      assert.ok(p.log.events.some((e) => e.event === 'stopped'), p.output());
      assert.deepEqual(await readdir(parent), ['keep.txt'], `${part} or an extraction folder was left behind`);
    } finally {
      watcher.close();
      if (p) await reap([p]);
      server.closeAllConnections();
      server.close();
    }
  });

  it('names fetch-data when the data folder is missing', async () => {
    const r = await coordinator(['start', '--local', '--data-dir', join(synth.root, 'nowhere')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /fetch-data/);
    assert.match(r.stderr, /ERR_DATA_MISSING/);
  });

  it('trains with 2 spawned workers, checkpoints, exports, then evaluates and predicts', async () => {
    const ck = join(synth.root, 'ck-spawn');
    const pids = new Set<number>();
    const r = await coordinator(['start', '--spawn-workers', '2', '--epochs', '2', '--batch-size', '32', '--lr', '0.05', '--data-dir', synth.dataDir, '--checkpoint-dir', ck, '--backend', 'wasm'], (line) => {
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
    // This test starts the coordinator with plain `node`: it says which V8 flags it lacks;
    // the workers it spawns get them (shared/node-flags.ts), so they say nothing.
    assert.ok(ev.some((e) => e.event === 'node_flags' && e.name === 'coordinator'), 'the coordinator says it runs without the node flags');
    assert.equal(ev.filter((e) => e.event === 'node_flags' && e.name === 'worker').length, 0, 'spawned workers run with the node flags');
    assert.equal(pids.size, 2);
    for (const pid of pids) assert.equal(pidExists(pid), false, `worker ${pid} was left running`);
    const files = await readdir(ck);
    assert.ok(files.includes('model'));
    const checkpoint = join(ck, files.filter((f) => f.endsWith('.flock')).sort().at(-1)!);

    const e = await coordinator(['evaluate', '--checkpoint', checkpoint, '--data-dir', synth.dataDir, '--backend', 'cpu']);
    assert.equal(e.code, 0, e.stderr);
    const acc = /validation accuracy: +([0-9.]+) .*?(\d+) images/.exec(e.stdout);
    assert.ok(acc, e.stdout);
    assert.ok(Number(acc[1]) > 0.9);
    assert.equal(Number(acc[2]), 140);

    const p = await coordinator(['predict', '--checkpoint', checkpoint, '--index', '3', '--data-dir', synth.dataDir, '--backend', 'wasm']);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /^(airplane|bird) \(true class: (airplane|bird)\)\n {2}airplane +0\.\d{4}\n {2}bird +0\.\d{4}/);
  });

  it('--bind-workers binds each spawned worker to its own CPU (Linux, taskset) and trains as usual', { skip: process.platform !== 'linux' && 'CPU binding is Linux-only' }, async () => {
    const cpus = allowedCpus()!;
    const r = await coordinator(['start', '--spawn-workers', '2', '--bind-workers', '--epochs', '1', '--batch-size', '32', '--data-dir', synth.dataDir, '--checkpoint-dir', join(synth.root, 'ck-bind'), '--backend', 'wasm', '--no-http']);
    assert.equal(r.code, 0, r.stderr);
    const ev = events(r.stdout);
    const bound = ev.filter((e) => e.event === 'worker_bound').map((e) => ({ slot: e.slot, cpu: e.cpu })).sort((a, b) => (a.slot as number) - (b.slot as number));
    assert.deepEqual(bound, [{ slot: 0, cpu: cpus[0] }, { slot: 1, cpu: cpus[1 % cpus.length] }], r.stdout);
    assert.ok(ev.some((e) => e.event === 'done'));
  });

  it('SIGTERM stops training gracefully: checkpoint written, workers gone, --resume finishes', async () => {
    const ck = join(synth.root, 'ck-term');
    const pids = new Set<number>();
    let sent = false;
    const args = ['start', '--spawn-workers', '2', '--epochs', '3', '--batch-size', '32', '--data-dir', synth.dataDir, '--checkpoint-dir', ck, '--backend', 'wasm'];
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
