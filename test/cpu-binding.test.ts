// CPU binding of spawned workers (--bind-workers): the CPU-list parser, and a real process
// bound with taskset, read back from /proc.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { allowedCpus, bindToCpu, parseCpuList } from '../coordinator/cpu-binding.js';
import { freePort, reap, spawnWorker, type Proc } from './child-procs.js';

describe('CPU binding', () => {
  const procs: Proc[] = [];
  after(() => reap(procs));

  it('parses Linux CPU lists', () => {
    assert.deepEqual(parseCpuList('0-1'), [0, 1]);
    assert.deepEqual(parseCpuList('0,2-4,7\n'), [0, 2, 3, 4, 7]);
    assert.deepEqual(parseCpuList('5'), [5]);
    assert.deepEqual(parseCpuList(''), []);
  });

  it('binds every thread of a running process to one CPU', { skip: process.platform !== 'linux' && 'CPU binding is Linux-only' }, async () => {
    const cpus = allowedCpus();
    assert.ok(cpus && cpus.length > 0, 'Linux says which CPUs this process may use');
    const cpu = cpus.at(-1)!;
    // A worker with nobody to connect to keeps retrying: a live process to bind.
    const p = spawnWorker(`ws://127.0.0.1:${await freePort()}`, 'bind-me');
    procs.push(p);
    assert.equal(await bindToCpu(p.proc.pid!, cpu), undefined);
    const status = readFileSync(`/proc/${p.proc.pid}/status`, 'utf8');
    assert.deepEqual(parseCpuList(/^Cpus_allowed_list:\s*(.+)$/m.exec(status)![1]!), [cpu]);
    assert.match((await bindToCpu(p.proc.pid!, 1 << 20)) ?? '', /.+/, 'an impossible CPU is reported, not thrown');
  });
});
