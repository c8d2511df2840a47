// Benchmark section `pool`: the coordinator's own JavaScript per training step, in process and
// without sockets: the scheduler deals a step to N connections whose sockets only count what
// they are given, and the answers (precomputed `net` gradients, or relays' group sums) are
// decoded and handed to it as the connection registry does. What it leaves out (the kernel's
// socket work, ws framing, GC of socket buffers) is what the `coordinator` and `relays`
// sections add. CPU time of this process only, so it stays readable on a busy machine.
import type { Duplex } from 'node:stream';
import pino from 'pino';
import type { WebSocket } from 'ws';
import { resolvePoolOptions } from '../coordinator/pool-options.js';
import { Scheduler } from '../coordinator/pool-scheduler.js';
import { WorkerConn } from '../coordinator/worker-conn.js';
import type { Dataset } from '../shared/data/cifar.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { MessageType, decode, encode } from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';
import { reduceGroupOf } from '../shared/training/reduce.js';
import { planEpoch, type MicroBatch } from '../shared/training/schedule.js';
import { printTable } from './bench-distributed.js';

interface PoolCase {
  readonly label: string;
  readonly connections: number;
  readonly batchSize: number;
  readonly microBatch: number;
  /** > 0: the connections are relays answering one sum per reduce group of this size. */
  readonly reduceGroup: number;
}

const CASES: readonly PoolCase[] = [
  { label: '64 direct (batch 64)', connections: 64, batchSize: 64, microBatch: 1, reduceGroup: 0 },
  { label: '4 direct (batch 64)', connections: 4, batchSize: 64, microBatch: 16, reduceGroup: 0 },
  { label: '4 relays x 64 (batch 256)', connections: 4, batchSize: 256, microBatch: 1, reduceGroup: 64 },
];

const WARMUP_STEPS = 100;
const TIMED_STEPS = 400;

/** A socket that takes every frame at once (nothing is sent anywhere). */
function fakeSocket(): WebSocket {
  return { readyState: 1, OPEN: 1, CLOSED: 3, bufferedAmount: 0, send: () => undefined, ping: () => undefined, terminate: () => undefined, close: () => undefined } as unknown as WebSocket;
}

async function runPoolCase(c: PoolCase): Promise<string[]> {
  const logger = pino({ level: 'silent' });
  const model = modelSpec('net');
  const count = 6_000;
  const data: Dataset = { count, images: new Uint8Array(count * 3072), labels: new Uint8Array(count) };
  const conns: WorkerConn[] = [];
  const scheduler = new Scheduler(resolvePoolOptions({}), {
    clock: { now: () => performance.now() }, model, wirePrecision: 'float32', train: data, validation: data,
    ready: () => conns, all: () => conns, drop: (_conn, reason) => { throw new Error(`pool bench: a connection was dropped (${reason})`); },
    stopping: () => false, waitingChanged: () => undefined,
  });
  const transport = { cork: () => undefined, uncork: () => undefined } as unknown as Duplex;
  for (let i = 0; i < c.connections; i++) {
    const conn = new WorkerConn(i + 1, fakeSocket(), transport, 'bench', logger, 2 ** 30);
    // The data's hashes match: no images are dealt, as with the load generator.
    conn.greeted(`sim-${i}`, 'simulated', 'simulated', { train: data, validation: data }, { train: true, validation: true });
    conn.relay = c.reduceGroup > 0;
    conns.push(conn);
  }
  const grads = model.params.map((p) => float32ToBytes(new Float32Array(p.size).fill(1e-4)));
  const state = initialState(model, 1);
  const plan = planEpoch(count, c.batchSize, c.microBatch, 1, 0);
  const stepsPerEpoch = Math.floor(count / c.batchSize);
  const part = (mb: MicroBatch): { microBatch: number; lossSum: number; correct: number; count: number; batchStats: [] } => ({ microBatch: mb.id, lossSum: 0.69 * mb.indices.length, correct: 0, count: mb.indices.length, batchStats: [] });
  let cpuUs = 0;
  for (let s = 0; s < WARMUP_STEPS + TIMED_STEPS; s++) {
    const work = { epoch: 0, globalStep: s, microBatches: plan.microBatches(s % stepsPerEpoch), reduceGroup: c.reduceGroup };
    const start = process.cpuUsage();
    const outcome = scheduler.gradients(work, { version: s, state });
    const paused = process.cpuUsage(start);
    // The answers, encoded outside the timed part (the workers' work, not the coordinator's).
    const owner = new Map<number, WorkerConn>();
    for (const conn of conns) for (const id of conn.outstanding) owner.set(id, conn);
    const frames: { conn: WorkerConn; frame: Uint8Array }[] = [];
    if (c.reduceGroup > 0) {
      const groups = new Map<number, MicroBatch[]>();
      for (const mb of work.microBatches) {
        const g = reduceGroupOf(mb.id, c.reduceGroup);
        const list = groups.get(g);
        if (list) list.push(mb);
        else groups.set(g, [mb]);
      }
      for (const [group, mbs] of groups) frames.push({ conn: owner.get(mbs[0]!.id)!, frame: encode({ type: MessageType.GROUP_SUM, step: s, group, grads, parts: mbs.map(part), computeMs: 0 }) });
    } else {
      for (const mb of work.microBatches) frames.push({ conn: owner.get(mb.id)!, frame: encode({ type: MessageType.GRADIENT, step: s, grads, ...part(mb), computeMs: 0 }) });
    }
    const resumed = process.cpuUsage();
    for (const { conn, frame } of frames) {
      const msg = decode(frame, 'worker');
      if (msg.type === MessageType.GROUP_SUM) scheduler.onGroupSum(conn, msg);
      else if (msg.type === MessageType.GRADIENT) scheduler.onGradient(conn, msg);
    }
    await outcome;
    const rest = process.cpuUsage(resumed);
    if (s >= WARMUP_STEPS) cpuUs += paused.user + paused.system + rest.user + rest.system;
  }
  for (const conn of conns) conn.end(undefined, 'bench done');
  return [c.label, String(c.batchSize / c.microBatch), (cpuUs / TIMED_STEPS / 1000).toFixed(3)];
}

export async function benchPool(): Promise<void> {
  console.log(`pool alone, in process (no sockets): Net gradients, ${TIMED_STEPS} steps after ${WARMUP_STEPS}; CPU ms per step of dealing the step, decoding, checking and summing the answers`);
  const rows: string[][] = [];
  for (const c of CASES) rows.push(await runPoolCase(c));
  printTable(['set-up', 'micro-batches', 'pool CPU ms/step'], rows);
}
