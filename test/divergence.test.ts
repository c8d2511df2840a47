// Divergence is not a protocol error (issue 12): a run whose learning rate blows the weights
// up ends with ERR_DIVERGED naming the step, exit status 1 and its newest checkpoint intact;
// its workers get a normal stop and exit 0 (none waits, none sees a protocol error).
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readCheckpointFile } from '../coordinator/checkpoint.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { COORDINATOR_CLI, reap, spawnNode, spawnWorker } from './child-procs.js';

describe('divergence', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flock-diverge-'));
    await writeSyntheticCifar(join(dir, 'data'), { trainPerFile: 40, testCount: 40, seed: 5 });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('a learning rate that overflows the weights stops the run with ERR_DIVERGED and exit 1; workers exit 0', async () => {
    const ckpt = join(dir, 'ckpt');
    const coordinator = spawnNode('coordinator', COORDINATOR_CLI, [
      'start', '--workers', '2', '--data-dir', join(dir, 'data'), '--checkpoint-dir', ckpt, '--checkpoint-every', '1',
      '--epochs', '3', '--batch-size', '16', '--micro-batch', '8', '--lr', '1e37', '--momentum', '0.9', '--backend', 'wasm', '--log-format', 'json', '--no-http',
    ]);
    const workers: ReturnType<typeof spawnWorker>[] = [];
    try {
      const listening = await coordinator.log.next((e) => e.event === 'listening');
      workers.push(spawnWorker(String(listening.url), 'w1', { logLevel: 'info' }), spawnWorker(String(listening.url), 'w2', { logLevel: 'info' }));
      const exit = await coordinator.exited;
      assert.equal(exit.code, 1, coordinator.output());
      assert.match(coordinator.stderr(), /training diverged at step \d+.*\[ERR_DIVERGED\]/s);
      const diverged = coordinator.log.filter((e) => e.event === 'diverged' || e.event === 'guard_failed');
      assert.ok(diverged.length > 0, 'the log says what happened');
      for (const w of workers) {
        const e = await w.exited;
        assert.equal(e.code, 0, `${w.name} exits 0 on the coordinator's stop: ${w.output()}`);
        assert.doesNotMatch(w.output(), /protocol|ERR_/i);
      }
      // Every checkpoint left is intact and finite (the diverging step never reached one).
      const files = (await readdir(ckpt)).filter((f) => f.endsWith('.flock'));
      assert.ok(files.length > 0, 'checkpoints were written before the divergence');
      const step = Number(/at step (\d+)/.exec(coordinator.stderr())![1]);
      for (const f of files) {
        const c = await readCheckpointFile(join(ckpt, f));
        assert.ok(c.globalStep <= step, `checkpoint ${f} (step ${c.globalStep}) is from before step ${step}`);
        assert.ok(c.state.params.every((p) => p.every((v) => Number.isFinite(v))), `${f} holds finite weights`);
      }
    } finally {
      await reap([coordinator, ...workers]);
    }
  });
});
