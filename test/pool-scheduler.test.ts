// The scheduler's dispatch when sending to a worker drops it at once (the pool-limits
// backpressure path once sent an EVALUATE whose chunk list repeated an id): the re-entrant
// dispatch runs after the outer one, every unit is held by exactly one live worker, and no
// frame repeats a unit.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolvePoolOptions } from '../coordinator/pool-options.js';
import { Scheduler } from '../coordinator/pool-scheduler.js';
import type { WorkerConn } from '../coordinator/worker-conn.js';
import { systemClock } from '../shared/clock.js';
import type { Dataset } from '../shared/data/cifar.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { MessageType, bytesToIndices, decode } from '../shared/protocol.js';
import { SentSamples } from '../coordinator/sent-samples.js';
import { chunk } from '../shared/training/schedule.js';
import type { Logger } from 'pino';
import { silentLogger } from './helpers.js';

const data = (count: number): Dataset => ({ images: new Uint8Array(count * IMAGE_BYTES), labels: new Uint8Array(count), count });

interface FakeConn {
  id: number;
  state: 'ready' | 'gone';
  name: string;
  backend: string;
  weightsVersion: number;
  results: number;
  lastProgress: number;
  outstanding: Set<number>;
  samples: { train: SentSamples; validation: SentSamples };
  frames: (Uint8Array | readonly Uint8Array[])[];
  log: Logger;
  send: (frame: Uint8Array | readonly Uint8Array[], onError: (err: Error) => void) => void;
  watchProgress: () => void;
  startBusy: () => void;
  claimCompute: (claimedMs: number) => number;
}

describe('scheduler dispatch', () => {
  it('a worker dropped synchronously while work is handed out: its units go to the others once, none twice', async () => {
    const validation = data(40);
    const conns: FakeConn[] = [];
    const ref: { scheduler?: Scheduler } = {};
    const fake = (id: number, failFirstSend: boolean): FakeConn => {
      let failed = false;
      const c: FakeConn = {
        id, state: 'ready', name: `w${id}`, backend: 'fake', weightsVersion: -1, results: 0, lastProgress: 0, outstanding: new Set(),
        samples: { train: new SentSamples(1, false), validation: new SentSamples(validation.count, false) }, frames: [], log: silentLogger(),
        send(frame, onError) {
          if (c.state !== 'ready') return;
          if (failFirstSend && !failed) {
            failed = true;
            return onError(new Error('socket gone')); // synchronously, as a drop inside send would
          }
          c.frames.push(frame);
        },
        watchProgress: () => undefined,
        startBusy: () => undefined,
        claimCompute: (claimedMs) => claimedMs,
      };
      return c;
    };
    conns.push(fake(1, true), fake(2, false), fake(3, false));
    const drop = (conn: WorkerConn): void => {
      const c = conn as unknown as FakeConn;
      if (c.state === 'gone') return;
      c.state = 'gone';
      ref.scheduler!.release(conn);
      ref.scheduler!.dispatch();
    };
    const scheduler = new Scheduler({ ...resolvePoolOptions({}), minWorkers: 1 }, {
      clock: systemClock, model: modelSpec('net'), wirePrecision: 'float32', train: data(1), validation,
      ready: () => conns.filter((c) => c.state === 'ready') as unknown as WorkerConn[], all: () => conns as unknown as WorkerConn[],
      drop, stopping: () => false, waitingChanged: () => undefined,
    });
    ref.scheduler = scheduler;
    const chunks = chunk(Uint32Array.from({ length: 40 }, (_, i) => i), 5);
    const done = scheduler.evaluate('validation', chunks, { version: 0, state: initialState(modelSpec('net'), 0) });
    let failure: unknown;
    done.catch((err: unknown) => { failure = err; });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(failure, undefined, String(failure));
    const held = new Map<number, number>();
    for (const c of conns) {
      for (const f of c.frames) {
        const msg = decode(Array.isArray(f) ? Buffer.concat(f) : f as Uint8Array, 'coordinator'); // throws on a repeated id
        if (msg.type !== MessageType.EVALUATE) continue;
        for (const ch of msg.chunks) {
          assert.equal(held.has(ch.id), false, `chunk ${ch.id} handed out twice`);
          held.set(ch.id, c.id);
          assert.equal(bytesToIndices(ch.indices).length, 5);
        }
      }
    }
    assert.deepEqual([...held.keys()].sort((a, b) => a - b), chunks.map((c) => c.id), 'every chunk is held');
    assert.ok([...held.values()].every((id) => id !== 1), 'none by the dropped worker');
  });
});
