// The guard in front of process.kill: no signal reaches a pid that is not a live descendant.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { isDescendant, pidExists, signalDescendant } from './signal-child.js';

describe('signalDescendant', () => {
  it('refuses non-positive, fractional, missing and foreign pids without signalling', () => {
    for (const pid of [-1, 0, -process.pid, 1.5, Number.NaN, undefined, process.pid, 1]) {
      assert.throws(() => signalDescendant(pid, 'SIGKILL'), /refusing to signal/, `pid ${String(pid)}`);
    }
    assert.throws(() => pidExists(-1), /refusing to probe/);
    assert.throws(() => pidExists(0), /refusing to probe/);
    // We are still here, and so is init.
    assert.equal(pidExists(1), true);
  });

  it('signals a real child, and a child of a child, then refuses the dead pid', async () => {
    // The shell's child `sleep` is our grandchild; the shell prints its pid and waits for it.
    const shell = spawn('sh', ['-c', 'sleep 60 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [chunk] = (await once(shell.stdout, 'data')) as [Buffer];
      const grandchild = Number(chunk.toString().trim());
      assert.equal(isDescendant(shell.pid!), true);
      assert.equal(isDescendant(grandchild), true);
      const closed = once(shell, 'close');
      signalDescendant(grandchild, 'SIGKILL');
      await closed; // `wait` returns once sleep died
      assert.equal(isDescendant(grandchild), false);
      assert.throws(() => signalDescendant(grandchild, 'SIGKILL'), /not a live descendant/);
    } finally {
      shell.kill('SIGKILL');
    }
  });
});
