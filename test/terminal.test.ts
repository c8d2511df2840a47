// The coordinator's output on a terminal (under a pseudo-terminal made by util-linux's
// `script`): pretty lines and the live status line; piped: JSON lines only.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { COORDINATOR_CLI, runCli } from './dashboard-tools.js';
import { useSyntheticCifar } from './helpers.js';

const hasScript = spawnSync('script', ['--version']).status === 0;

describe('coordinator terminal output', () => {
  const synth = useSyntheticCifar('flock-terminal-', { trainPerFile: 100, testCount: 160, seed: 5 });

  const args = (ck: string): string[] => ['start', '--spawn-workers', '2', '--epochs', '2', '--batch-size', '32', '--lr', '0.05', '--data-dir', synth.dataDir, '--checkpoint-dir', join(synth.root, ck), '--backend', 'wasm'];

  it('on a terminal: pretty lines and a status line redrawn in place', { skip: hasScript ? false : 'needs `script` from util-linux' }, async () => {
    const command = [process.execPath, COORDINATOR_CLI, ...args('ck-tty')].join(' ');
    const out = await new Promise<string>((resolve, reject) => {
      execFile('script', ['-qfec', command, '/dev/null'], { env: { ...process.env, FLOCK_DATA_DIR: '', FLOCK_TOKEN: '' }, maxBuffer: 16 << 20 }, (err, stdout) => (err ? reject(new Error(`script failed: ${err.message}`)) : resolve(stdout)));
    });
    // eslint-disable-next-line no-control-regex
    const plain = out.replace(/\x1b\[[0-9;]*[mK]/g, '');
    assert.match(plain, /\repoch [12]\/2 \[[#-]{20}\] step \d+\/13 +\d+ img\/s +2 workers +ETA epoch \d+:\d\d, run \d+:\d\d/);
    assert.match(plain, /INFO \(coordinator\): epoch 2\/2: train loss/);
    assert.match(plain, /INFO \(coordinator\): training complete/);
    assert.ok(!/^\{"level"/m.test(plain), 'no JSON lines on a terminal');
    // Each log line starts on a clean line: the status line (drawn any number of times, each
    // from a '\r') is cleared first, so what precedes the line's own text ends with '\r'.
    for (const line of plain.split('\n').filter((l) => l.includes('INFO (coordinator)'))) assert.match(line, /^([^\n]*\r)?\[\d\d:\d\d:\d\d\.\d{3}\] INFO[^\r]*\r?$/);
  });

  it('on a terminal: the spawned workers\' lines are written above the status line, never onto it', { skip: hasScript ? false : 'needs `script` from util-linux' }, async () => {
    // At debug level each worker logs every gradient it sends, so its lines fall between redraws.
    const command = [process.execPath, COORDINATOR_CLI, ...args('ck-relay'), '--log-level', 'debug'].join(' ');
    const out = await new Promise<string>((resolve, reject) => {
      execFile('script', ['-qfec', command, '/dev/null'], { env: { ...process.env, FLOCK_DATA_DIR: '', FLOCK_TOKEN: '' }, maxBuffer: 64 << 20 }, (err, stdout) => (err ? reject(new Error(`script failed: ${err.message}`)) : resolve(stdout)));
    });
    // eslint-disable-next-line no-control-regex
    const plain = out.replace(/\x1b\[[0-9;]*[mK]/g, '');
    const lines = plain.split('\n');
    const workerLines = lines.filter((l) => /\] DEBUG \(worker/.test(l) && l.includes('gradient sent'));
    assert.ok(workerLines.length >= 2 * 13, `${workerLines.length} worker gradient lines`);
    // Some of them came while the status line was shown: it was cleared before each.
    assert.ok(workerLines.some((l) => /^\repoch /.test(l)), 'no worker line came while the status line was up');
    for (const line of lines.filter((l) => /\] (DEBUG|INFO|WARN) \(/.test(l))) assert.match(line, /^([^\n]*\r)?\[\d\d:\d\d:\d\d\.\d{3}\] (DEBUG|INFO|WARN) \([^\r]*\r?$/, JSON.stringify(line));
    assert.ok(!/^\{"level"/m.test(plain), 'the workers write pretty lines too');
  });

  it('piped: JSON lines only, no status line', async () => {
    const run = runCli(COORDINATOR_CLI, args('ck-pipe'));
    let raw = '';
    run.child.stdout!.on('data', (chunk: string) => (raw += chunk));
    assert.equal(await run.exited, 0, run.stderr);
    assert.ok(!raw.includes('\r'));
    const lines = raw.split('\n').filter((l) => l !== '');
    for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), line);
    assert.equal(run.records.filter((r) => r.event === 'epoch' && r.name === 'coordinator').length, 2);
  });
});
