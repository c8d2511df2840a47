// Fault injection on real processes (issue 4): worker processes SIGKILLed at random steps
// and restarted; the coordinator CLI SIGKILLed and resumed on the same port; scripted bad
// actors (NaN, wrong shapes, stale steps, unassigned micro-batches, garbage, oversized and
// text frames, broken WebSocket framing, no token, no hello), 200 fuzzed frames on idle
// connections and mutated gradient results for micro-batches held in an open step. After
// each, the run completes, every offender was logged and disconnected with the expected
// close code, every step ran exactly once with the full batch, and the final weights are
// bit-identical to the undisturbed run (micro-batch gradients are reduced in id order, so
// who computed what cannot matter).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { readCheckpointFile, type Checkpoint } from '../coordinator/checkpoint.js';
import type { Executor } from '../coordinator/executor.js';
import type { PoolOptions } from '../coordinator/pool-options.js';
import type { TrainResult } from '../coordinator/trainer.js';
import { WorkerPool, maxPayload } from '../coordinator/worker-pool.js';
import { systemClock } from '../shared/clock.js';
import { modelSpec, type ModelSpec } from '../shared/models/spec.js';
import { CloseCode, MessageType, PROTOCOL_VERSION, encode, type AssignMessage } from '../shared/protocol.js';
import { Rng, mixSeed } from '../shared/random.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { COORDINATOR_CLI, freePort, reap, spawnNode, spawnWorker, startRelay, type Proc } from './child-procs.js';
import {
  GRADIENT_MUTATIONS, MESSAGE_TOO_BIG, WS_INVALID_DATA, WS_PROTOCOL_ERROR, fuzzFrames, fuzzListener, gradientFrame, helloFrame,
  mutateGradient, rawFrame, rawUpgrade, scriptedClient, unitCount, wellFormedGradient, wsFrame, type ClientOutcome, type FuzzResult,
} from './fault-tools.js';
import { LogRecorder, type LogEvent } from './log-recorder.js';
import { assertFinalCheckpoint, checkpointFile, epochMetrics, sameState, trainInProcess, trainWith, useTrainingData, type RunSizes } from './reference-run.js';
import { signalDescendant } from './signal-child.js';

/** Every random choice of the suite (kill steps, victims, fuzz frames) derives from this. */
const FAULT_SEED = 0xf10c4;
const TRAIN = { model: 'net-dropout', epochs: 2, batchSize: 32, microBatch: 8, lr: 0.05, seed: 7 } as const;
const EVAL_CHUNK = 10;
const TOKEN = 'fault-token';
const FUZZ_FRAMES = 200;
/** Micro-batch of the open-step fuzz run: 16 units a step, so 14 fuzzers and 2 honest workers each hold one. */
const OPEN_STEP_MICRO_BATCH = 2;

/** Counts of each value, for diagnostics ("4000 12, 4003 7"). */
const histogram = <K>(items: Iterable<K>): string => {
  const m = new Map<K, number>();
  for (const k of items) m.set(k, (m.get(k) ?? 0) + 1);
  return [...m].map(([k, v]) => `${String(k)} ${v}`).join(', ');
};

interface StepRecord {
  readonly step: number;
  readonly epoch: number;
  readonly units: number;
  readonly samples: number;
}

/** An executor that records every step it runs (to prove none is lost or repeated) and runs hooks around it. */
function instrument(pool: WorkerPool, hooks: { before?: (step: number) => Promise<void>; after?: (step: number) => Promise<void> } = {}): { executor: Executor; steps: StepRecord[] } {
  const steps: StepRecord[] = [];
  const executor: Executor = {
    workerCount: () => pool.workerCount(),
    evaluate: (split, chunks, weights) => pool.evaluate(split, chunks, weights),
    gradients: async (work, weights) => {
      await hooks.before?.(work.globalStep);
      const out = await pool.gradients(work, weights);
      steps.push({ step: work.globalStep, epoch: work.epoch, units: out.results.length, samples: out.results.reduce((n, r) => n + r.count, 0) });
      await hooks.after?.(work.globalStep);
      return out;
    },
  };
  return { executor, steps };
}

const named = (name: string) => (e: LogEvent): boolean => e.workerName === name;
const left = (name: string) => (e: LogEvent): boolean => e.event === 'worker_left' && e.workerName === name;

describe('fault injection on real processes', { timeout: 240_000 }, () => {
  // 42 kept images per file: 210 training images = 6 steps of 32 per epoch; 42 validation.
  const data = useTrainingData('flock-faults-', { trainPerFile: 48, testCount: 48, seed: 13 });
  let config: TrainConfig;
  let model: ModelSpec;
  let reference: TrainResult;
  let stepsPerEpoch: number;
  let totalSteps: number;
  const procs = new Set<Proc>();

  before(async () => {
    config = resolveTrainConfig(TRAIN, 1);
    model = modelSpec(config.model);
    stepsPerEpoch = Math.floor(data.train.count / config.batchSize);
    totalSteps = stepsPerEpoch * config.epochs;
    reference = await trainInProcess(data, config, sizes());
    assert.equal(reference.globalStep, totalSteps);
  });

  after(() => reap(procs));

  const sizes = (): RunSizes => ({ trainCount: data.train.count, validationCount: data.validation.count, evalChunk: EVAL_CHUNK });
  const runTrainer = (executor: Executor, cfg: TrainConfig = config): Promise<TrainResult> => trainWith(cfg, executor, sizes());
  /** The undisturbed in-process run of `cfg`. */
  const runLocal = (cfg: TrainConfig): Promise<TrainResult> => trainInProcess(data, cfg, sizes());

  function listen(logger: Logger, opts: Partial<PoolOptions> = {}, cfg: TrainConfig = config): Promise<WorkerPool> {
    return WorkerPool.listen({ port: 0, stepTimeoutMs: 60_000, heartbeatMs: 5_000, ...opts }, { logger, clock: systemClock, model, config: cfg, train: data.train, validation: data.validation });
  }

  function worker(url: string, name: string, opts: { token?: string; logLevel?: string } = {}): Proc {
    const p = spawnWorker(url, name, opts);
    procs.add(p);
    return p;
  }

  /** Completed, every step once with the whole batch, and the reference run's weights and metrics. */
  function assertUndisturbed(result: TrainResult, steps: readonly StepRecord[], ref: TrainResult = reference, cfg: TrainConfig = config): void {
    assert.equal(result.completed, true);
    assert.equal(result.globalStep, totalSteps);
    assert.deepEqual(steps.map((s) => s.step), Array.from({ length: totalSteps }, (_, i) => i), 'each step ran exactly once, in order');
    for (const s of steps) {
      assert.equal(s.units, cfg.batchSize / cfg.microBatch, `step ${s.step}: one result per micro-batch`);
      assert.equal(s.samples, cfg.batchSize, `step ${s.step}: the whole batch, counted once`);
    }
    for (let e = 0; e < cfg.epochs; e++) {
      const inEpoch = steps.filter((s) => s.epoch === e);
      assert.equal(inEpoch.length, stepsPerEpoch);
      assert.equal(inEpoch.reduce((n, s) => n + s.samples, 0), stepsPerEpoch * cfg.batchSize);
    }
    assert.deepEqual(result.state.params, ref.state.params);
    assert.deepEqual(result.state.buffers, ref.state.buffers);
    assert.ok(sameState(result.state, ref.state), 'weights are bit-identical to the undisturbed run');
    assert.deepEqual(epochMetrics(result.history), epochMetrics(ref.history));
  }

  it('worker processes SIGKILLed at random steps (on assignment, mid-step, mid-validation) and restarted', async (t: TestContext) => {
    const rec = new LogRecorder();
    const pool = await listen(rec.logger(), { minWorkers: 2, waitLogMs: 100 });
    const workers = new Map<string, Proc>();
    const start = (name: string): void => void workers.set(name, worker(pool.url, name, { logLevel: 'debug' }));
    try {
      start('w1');
      start('w2');
      await pool.waitForWorkers(2);

      // Seeded plan: three distinct training steps (not the last) plus the first validation.
      const rng = new Rng(mixSeed(FAULT_SEED, 1));
      const candidates = Array.from({ length: totalSteps - 2 }, (_, i) => i + 1);
      const killSteps: number[] = [];
      while (killSteps.length < 3) killSteps.push(...candidates.splice(rng.int(candidates.length), 1));
      killSteps.sort((a, b) => a - b);
      const plan = [
        ...killSteps.map((step) => ({ kind: 'gradients', key: step, pick: rng.int(2), mode: rng.int(2) === 0 ? 'on-assign' : 'mid-step', done: false })),
        { kind: 'evaluate', key: 1, pick: rng.int(2), mode: 'on-assign', done: false },
      ];
      const kills: { name: string; kind: string; key: number; mode: string; units: number[] }[] = [];
      let restarts = 0;
      const kill = (victim: Proc, entry: (typeof plan)[number], units: number[]): void => {
        if (!victim.running()) return;
        victim.proc.kill('SIGKILL');
        kills.push({ name: victim.name, kind: entry.kind, key: entry.key, mode: entry.mode, units });
        setImmediate(() => start(`restart-${++restarts}`));
      };
      const seen = new Map<string, number>();
      const unknown: string[] = [];
      rec.on((e) => {
        if (e.event !== 'assigned') return;
        const key = `${String(e.kind)}:${String(e.key)}`;
        const index = seen.get(key) ?? 0;
        seen.set(key, index + 1);
        const entry = plan.find((p) => !p.done && p.kind === e.kind && p.key === e.key && p.pick === index);
        if (!entry) return;
        entry.done = true;
        const name = rec.events.find((j) => j.event === 'worker_joined' && j.workerId === e.workerId)?.workerName;
        const victim = workers.get(String(name));
        // (No assertion in here: this runs inside the pool's logging call.)
        if (!victim) return void unknown.push(String(e.workerId));
        const units = e.units as number[];
        // Killed inside the coordinator's logging call: before its assignment is even sent...
        if (entry.mode === 'on-assign') return kill(victim, entry, units);
        // ...or once it has returned its first micro-batch of the step.
        const off = victim.log.on((w) => {
          if (w.event === 'gradient' && w.step === entry.key) {
            off();
            kill(victim, entry, units);
          }
        });
      });

      const { executor, steps } = instrument(pool);
      const result = await runTrainer(executor);
      assertUndisturbed(result, steps);
      assert.deepEqual(unknown, [], 'every assignment went to a worker this test started');
      assert.equal(kills.length, plan.length, `kills ${JSON.stringify(kills)}`);
      assert.equal(restarts, plan.length);

      for (const k of kills) {
        const victim = workers.get(k.name)!;
        assert.equal((await victim.exited).signal, 'SIGKILL');
        const gone = await rec.next(left(k.name));
        assert.match(String(gone.reason), /connection closed|send failed/);
        assert.equal(typeof gone.workerId, 'number', 'says who');
        assert.ok(Array.isArray(gone.reassigned), 'says which units were reassigned');
        const reassigned = gone.reassigned as number[];
        assert.ok(reassigned.every((u) => Number.isInteger(u) && u >= 0 && u < 5), `reassigned ${reassigned.join(',')}`);
        if (k.mode === 'on-assign') {
          assert.deepEqual(reassigned, k.units, 'a worker killed before its work arrived gives all of it back');
          // One worker left, two needed: the pool says so, and waits.
          const at = rec.events.indexOf(gone);
          assert.ok(rec.events.slice(at).some((e) => e.event === 'waiting' && e.have === 1 && e.need === 2), 'logs "waiting for workers (have 1, need 2)"');
        }
      }
      assert.ok(kills.some((k) => k.kind === 'evaluate'));
      // Validation still counted every image once (the trainer checks) and matched the reference.
      t.diagnostic(`worker kills: ${kills.map((k) => `${k.name}@${k.kind === 'evaluate' ? 'validation' : `step ${k.key}`} (${k.mode})`).join(', ')}; ${restarts} restarts`);
    } finally {
      await pool.close();
    }
    // Survivors get `stop` and exit 0.
    for (const p of workers.values()) {
      const exit = await p.exited;
      if (exit.signal !== 'SIGKILL') assert.equal(exit.code, 0, `${p.name}: ${p.output()}`);
    }
  });

  it('bad actors and 200 fuzzed frames during a run: each is logged and disconnected, the run is undisturbed', async (t: TestContext) => {
    const rec = new LogRecorder();
    const pool = await listen(rec.logger(), { token: TOKEN, helloTimeoutMs: 2_000 });
    try {
      const url = pool.url;
      const honest = [worker(url, 'honest-1', { token: TOKEN }), worker(url, 'honest-2', { token: TOKEN })];
      const rng = new Rng(mixSeed(FAULT_SEED, 2));
      const oversized = new Uint8Array(2 * maxPayload(model));
      const garbage = new Uint8Array(Array.from({ length: 64 }, () => rng.int(256)));
      const unitsOf = (msg: AssignMessage): number[] => msg.microBatches.map((m) => m.id);
      const first = (msg: AssignMessage): { id: number; count: number } => ({ id: msg.microBatches[0]!.id, count: unitCount(msg.microBatches[0]!.indices) });

      // Actors that say hello, get work, and answer their first assignment with a bad frame.
      interface Actor { readonly name: string; readonly reply: (msg: AssignMessage) => Uint8Array | string; readonly codes: number[]; readonly reason: RegExp }
      const actors: Actor[] = [
        { name: 'nan-gradient', codes: [CloseCode.BAD_GRADIENT], reason: /NaN/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count, fill: Number.NaN }) },
        { name: 'infinite-gradient', codes: [CloseCode.BAD_GRADIENT], reason: /NaN or Infinity/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count, fill: Number.POSITIVE_INFINITY }) },
        {
          name: 'wrong-shape', codes: [CloseCode.BAD_GRADIENT], reason: /values, expected/,
          reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count, grads: model.params.map((p, k) => new Uint8Array((p.size - (k === 0 ? 1 : 0)) * 4)) }),
        },
        { name: 'missing-tensor', codes: [CloseCode.BAD_GRADIENT], reason: /tensors/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count, grads: model.params.slice(1).map((p) => new Uint8Array(p.size * 4)) }) },
        { name: 'wrong-count', codes: [CloseCode.BAD_GRADIENT], reason: /covers \d+ samples/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count + 1 }) },
        { name: 'stale-step', codes: [CloseCode.PROTOCOL], reason: /not the open step/, reply: (m) => gradientFrame(model, { step: m.step - 1, microBatch: first(m).id, count: first(m).count }) },
        { name: 'future-step', codes: [CloseCode.PROTOCOL], reason: /not the open step/, reply: (m) => gradientFrame(model, { step: m.step + 1, microBatch: first(m).id, count: first(m).count }) },
        {
          name: 'unassigned-micro-batch', codes: [CloseCode.PROTOCOL], reason: /not outstanding at this worker/,
          reply: (m) => gradientFrame(model, { step: m.step, microBatch: [0, 1, 2, 3].find((id) => !unitsOf(m).includes(id))!, count: first(m).count }),
        },
        { name: 'out-of-range-micro-batch', codes: [CloseCode.PROTOCOL], reason: /not outstanding at this worker/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: 2 ** 31, count: first(m).count }) },
        { name: 'garbage-bytes', codes: [CloseCode.PROTOCOL], reason: /protocol violation/, reply: () => garbage },
        { name: 'oversized-frame', codes: [MESSAGE_TOO_BIG], reason: /Max payload size exceeded/, reply: () => oversized },
        { name: 'text-frame', codes: [CloseCode.PROTOCOL], reason: /single binary messages/, reply: () => '{"t":5}' },
        { name: 'second-hello', codes: [CloseCode.PROTOCOL], reason: /second hello/, reply: () => helloFrame('second-hello') },
        { name: 'wrong-version', codes: [CloseCode.PROTOCOL_VERSION], reason: new RegExp(`protocol version ${PROTOCOL_VERSION + 1}`), reply: (m) => rawFrame({ v: PROTOCOL_VERSION + 1, t: MessageType.GRADIENT, step: m.step }) },
        { name: 'unknown-type', codes: [CloseCode.PROTOCOL], reason: /message type 42/, reply: () => rawFrame({ v: PROTOCOL_VERSION, t: 42 }) },
        { name: 'coordinator-message', codes: [CloseCode.PROTOCOL], reason: /not one a worker sends/, reply: () => encode({ type: MessageType.STOP, reason: 'you stop' }) },
        // Protocol 5: a non-finite loss decodes; unverified, it is refused as a bad result.
        { name: 'infinite-loss', codes: [CloseCode.BAD_GRADIENT], reason: /non-finite loss/, reply: (m) => gradientFrame(model, { step: m.step, microBatch: first(m).id, count: first(m).count, lossSum: Number.POSITIVE_INFINITY }) },
        {
          name: 'evaluation-during-step', codes: [CloseCode.PROTOCOL], reason: /evaluation for request/,
          reply: () => encode({ type: MessageType.EVALUATION, requestId: 1, chunk: 0, lossSum: 1, correct: 0, count: 10, computeMs: 1 }),
        },
      ];
      // Two per step from step 1: with the two honest workers, each gets one of the 4 micro-batches.
      const perStep = 2;
      const lastActorStep = Math.ceil(actors.length / perStep);
      const fuzzStep = lastActorStep + 1;
      assert.ok(fuzzStep < totalSteps - 1, 'enough steps for every actor and the fuzzer');

      const launched: { name: string; codes: number[]; reason: RegExp; outcome: Promise<ClientOutcome> }[] = [];
      const launch = async (actor: Actor): Promise<void> => {
        const c = scriptedClient(url, {
          token: TOKEN, hello: actor.name,
          onAssign: (ws: WebSocket, msg) => {
            const frame = actor.reply(msg);
            ws.send(frame, { binary: typeof frame !== 'string' });
          },
        });
        launched.push({ name: actor.name, codes: actor.codes, reason: actor.reason, outcome: c.outcome });
        await c.welcomed;
      };

      // Offenders that never get as far as hello (or past the HTTP upgrade).
      const early: { name: string; run: () => Promise<void> }[] = [
        ...[undefined, 'Bearer wrong-token', TOKEN, 'Basic ZmF1bHQ6dG9rZW4='].map((authorization, i) => ({
          name: `unauthenticated-${i + 1}`,
          run: async () => {
            const c = scriptedClient(url, { ...(authorization === undefined ? {} : { authorization }), hello: `intruder-${i + 1}` });
            const o = await c.outcome;
            assert.equal(o.status, 401);
            assert.equal(o.opened, false, 'no WebSocket is opened');
            assert.equal(o.received, 0, 'no data flows');
          },
        })),
        {
          name: 'unauthenticated-with-trailing-hello',
          run: async () => {
            // The upgrade request and a hello frame in one write: the hello must never be read.
            const o = await rawUpgrade(url, { after: wsFrame(0x2, helloFrame('smuggler')), sameWrite: true });
            assert.equal(o.status, 401);
            assert.equal(o.closeCode, undefined);
          },
        },
        {
          name: 'no-hello',
          run: async () => {
            const o = await scriptedClient(url, { token: TOKEN }).outcome;
            assert.equal(o.code, CloseCode.TIMEOUT);
            assert.match(o.reason, /no hello within 2000 ms/);
          },
        },
        ...[
          { name: 'gradient-before-hello', frame: gradientFrame(model, { step: 0, microBatch: 0, count: 8 }), code: CloseCode.PROTOCOL as number, reason: /before hello/ },
          { name: 'old-version-hello', frame: rawFrame({ v: 0, t: MessageType.HELLO, name: 'old', backend: 'x' }), code: CloseCode.PROTOCOL_VERSION as number, reason: /protocol version 0/ },
          { name: 'garbage-before-hello', frame: new Uint8Array([0xc1, 0xff, 0x00, 0x13]), code: CloseCode.PROTOCOL as number, reason: /protocol violation/ },
        ].map((a) => ({
          name: a.name,
          run: async () => {
            const o = await scriptedClient(url, { token: TOKEN, onOpen: (ws) => ws.send(a.frame) }).outcome;
            assert.equal(o.code, a.code);
            assert.match(o.reason, a.reason);
          },
        })),
        // Broken WebSocket framing after a proper, authenticated upgrade.
        ...[
          { name: 'unmasked-frame', bytes: wsFrame(0x2, helloFrame('x'), { mask: false }), code: WS_PROTOCOL_ERROR },
          { name: 'reserved-opcode', bytes: wsFrame(0x3, new Uint8Array(4)), code: WS_PROTOCOL_ERROR },
          { name: 'rsv1-without-extension', bytes: wsFrame(0x2, helloFrame('x'), { rsv: 0x40 }), code: WS_PROTOCOL_ERROR },
          { name: 'invalid-utf8-text', bytes: wsFrame(0x1, new Uint8Array([0xc3, 0x28, 0xff])), code: WS_INVALID_DATA },
        ].map((a) => ({
          name: a.name,
          run: async () => {
            const o = await rawUpgrade(url, { authorization: `Bearer ${TOKEN}`, after: a.bytes });
            assert.equal(o.status, 101);
            assert.equal(o.closeCode, a.code);
          },
        })),
        {
          name: 'not-http',
          run: async () => {
            const o = await rawUpgrade(url, { request: Buffer.from(Array.from({ length: 300 }, () => rng.int(256))) });
            assert.notEqual(o.status, 101);
          },
        },
        {
          name: 'plain-http',
          run: async () => {
            const o = await rawUpgrade(url, { request: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n') });
            assert.equal(o.status, 426);
          },
        },
      ];

      // The idle fuzzer: each frame on a fresh, authenticated connection right after WELCOME, holding no work.
      const frames = fuzzFrames(mixSeed(FAULT_SEED, 3), FUZZ_FRAMES, model);
      let fuzzResults: FuzzResult[] = [];
      const fuzz = async (): Promise<void> => {
        fuzzResults = await fuzzListener(url, TOKEN, frames, 'fuzz-');
      };

      let earlyDone: Promise<void> = Promise.resolve();
      let fuzzDone: Promise<void> = Promise.resolve();
      const { executor, steps } = instrument(pool, {
        before: async (step) => {
          if (step === 1) earlyDone = Promise.all(early.map((a) => a.run().catch((err: unknown) => {
            throw new Error(`${a.name}: ${String(err)}`, { cause: err });
          }))).then(() => undefined);
          if (step >= 1 && step <= lastActorStep) await Promise.all(actors.slice((step - 1) * perStep, step * perStep).map(launch));
          if (step === fuzzStep) fuzzDone = fuzz();
          // Every offender has done its worst before the last step: the run must still end well.
          if (step === totalSteps - 1) await Promise.all([earlyDone, fuzzDone]);
        },
      });
      await pool.waitForWorkers(2);
      const result = await runTrainer(executor);
      // Every offender is gone while training went on; the pool still serves the honest two.
      assert.equal(pool.workerCount(), 2);
      await pool.close();
      assertUndisturbed(result, steps);
      for (const h of honest) assert.equal((await h.exited).code, 0, h.output());

      // Scripted actors: the expected close code on their side, who and why on the coordinator's.
      for (const a of launched) {
        const o = await a.outcome;
        assert.ok(a.codes.includes(o.code), `${a.name}: closed with ${o.code} (${o.reason}), expected ${a.codes.join(' or ')}`);
        const gone = await rec.next(left(a.name));
        assert.match(String(gone.reason), a.reason, `${a.name}: logged reason`);
        assert.ok(Array.isArray(gone.reassigned) && (gone.reassigned as number[]).length > 0, `${a.name}: its micro-batch was reassigned`);
        assert.ok((gone.level as number) >= 40, `${a.name}: logged as a warning`);
      }
      assert.equal(launched.length, actors.length, 'every scripted actor got work and was launched');
      // The coordinator's side of the early offenders.
      const warned = (pred: (e: LogEvent) => boolean): boolean => rec.events.some((e) => (e.level as number) >= 40 && pred(e));
      assert.equal(rec.filter((e) => e.event === 'unauthorized').reduce((n, e) => n + (e.count as number), 0), 5, 'each refused upgrade is counted in the log');
      assert.ok(!rec.events.some((e) => e.event === 'worker_joined' && /intruder|smuggler/.test(String(e.workerName))), 'no unauthenticated hello was read');
      for (const reason of [/no hello within 2000 ms/, /before hello/, /protocol version 0/, /not a msgpack frame|must be a map/]) {
        assert.ok(warned((e) => e.event === 'worker_rejected' && reason.test(String(e.err))), `rejection logged: ${reason}`);
      }
      for (const reason of [/MASK must be set/, /invalid opcode 3/, /RSV1 must be clear/, /invalid UTF-8/i]) {
        assert.ok(warned((e) => e.event === 'worker_rejected' && reason.test(String(e.err))), `framing error logged: ${reason}`);
      }

      // Fuzzed frames: every connection closed with a code the frame calls for, and was logged.
      assert.equal(fuzzResults.length, FUZZ_FRAMES);
      for (const f of fuzzResults) {
        assert.ok(f.expected.includes(f.code), `fuzz frame ${f.i} (${f.kind}): closed with ${f.code}, expected ${f.expected.join(' or ')}`);
        const gone = rec.events.find(left(`fuzz-${f.i}`));
        assert.ok(gone, `fuzz frame ${f.i} (${f.kind}): worker_left logged`);
        assert.ok(rec.events.some((e) => named(`fuzz-${f.i}`)(e) && e.event === 'worker_joined'));
      }
      t.diagnostic(`bad actors: ${launched.length} after hello, ${early.length} before it; fuzzed frames: ${fuzzResults.length} ` +
        `(${histogram(fuzzResults.map((f) => f.kind.split(':')[0]!))}); close codes: ${histogram(fuzzResults.map((f) => f.code))}`);
    } finally {
      await pool.close();
    }
  });

  it('a relay under 100 fuzzed frames and a non-relay sending a group sum: each is disconnected with its code, the run is undisturbed', async (t: TestContext) => {
    const rec = new LogRecorder();
    const pool = await listen(rec.logger(), { token: TOKEN });
    try {
      // A plain worker at the coordinator that answers its work with a group sum: only relays may.
      // It joins first, so it is dealt the first step's one group.
      const impostor = scriptedClient(pool.url, {
        token: TOKEN, hello: 'not-a-relay',
        onAssign: (ws, m) => ws.send(encode({
          type: MessageType.GROUP_SUM, step: m.step, group: 0, grads: model.params.map((p) => new Uint8Array(p.size * 4)),
          parts: m.microBatches.map((u) => ({ microBatch: u.id, lossSum: 1, correct: 0, count: unitCount(u.indices), batchStats: [] })), computeMs: 1,
        })),
      });
      await impostor.welcomed;
      // The whole step is one reduce group (the default): the relay takes every step whole.
      const relay = await startRelay(pool.url, 'relay-under-fuzz', procs, { token: TOKEN });
      const honest = [worker(relay.url, 'behind-relay-1', { token: TOKEN }), worker(relay.url, 'behind-relay-2', { token: TOKEN })];
      const frames = fuzzFrames(mixSeed(FAULT_SEED, 9), FUZZ_FRAMES / 2, model);
      let fuzzResults: FuzzResult[] = [];
      const fuzz = async (): Promise<void> => {
        fuzzResults = await fuzzListener(relay.url, TOKEN, frames, 'relay-fuzz-');
      };
      let fuzzDone: Promise<void> = Promise.resolve();
      const { executor, steps } = instrument(pool, {
        before: async (step) => {
          if (step === 1) fuzzDone = fuzz();
          if (step === totalSteps - 1) await fuzzDone;
        },
      });
      await pool.waitForWorkers(2);
      const result = await runTrainer(executor);
      await pool.close();
      assertUndisturbed(result, steps);
      assert.equal((await relay.proc.exited).code, 0, relay.proc.output().slice(-2000));
      for (const h of honest) assert.equal((await h.exited).code, 0, h.output());
      const o = await impostor.outcome;
      assert.equal(o.code, CloseCode.PROTOCOL, `a group sum from a worker: closed with ${o.code} (${o.reason})`);
      const gone = await rec.next(left('not-a-relay'));
      assert.match(String(gone.reason), /not a relay/);
      assert.ok(Array.isArray(gone.reassigned) && gone.reassigned.length > 0, 'its micro-batches were reassigned');
      assert.equal(fuzzResults.length, FUZZ_FRAMES / 2);
      for (const f of fuzzResults) {
        assert.ok(f.expected.includes(f.code), `relay fuzz frame ${f.i} (${f.kind}): closed with ${f.code}, expected ${f.expected.join(' or ')}`);
        assert.ok(relay.proc.log.events.some(left(`relay-fuzz-${f.i}`)), `relay fuzz frame ${f.i} (${f.kind}): worker_left logged by the relay`);
      }
      t.diagnostic(`relay fuzzed frames: ${fuzzResults.length} (${histogram(fuzzResults.map((f) => f.kind.split(':')[0]!))}); close codes: ${histogram(fuzzResults.map((f) => f.code))}`);
    } finally {
      await pool.close();
    }
  });

  it('fuzzed gradient results during open steps: each mutation gets the close code it calls for, the run is undisturbed', async (t: TestContext) => {
    // Micro-batches of 2: 16 units a step, one for each of the 2 honest workers and 14 fuzzers
    // that join before the step. Each fuzzer answers its unit with a mutated copy of a result
    // the coordinator would accept, so the frame reaches the gradient checks of an open step.
    const cfg = resolveTrainConfig({ ...TRAIN, microBatch: OPEN_STEP_MICRO_BATCH }, 1);
    const unitsPerStep = cfg.batchSize / cfg.microBatch;
    const fuzzersPerStep = unitsPerStep - 2;
    const ref = await runLocal(cfg);
    const rec = new LogRecorder();
    const pool = await listen(rec.logger('info'), { token: TOKEN }, cfg);
    const rng = new Rng(mixSeed(FAULT_SEED, 6));
    const limit = maxPayload(model, 0, unitsPerStep);
    const sent: { name: string; step: number; kind: string; codes: readonly number[]; outcome: Promise<ClientOutcome> }[] = [];
    let next = 0;
    try {
      const honest = [worker(pool.url, 'honest-1', { token: TOKEN }), worker(pool.url, 'honest-2', { token: TOKEN })];
      await pool.waitForWorkers(2);
      const { executor, steps } = instrument(pool, {
        before: async (step) => {
          const joined: Promise<void>[] = [];
          for (let f = 0; f < fuzzersPerStep; f++) {
            const i = next++;
            const kind = GRADIENT_MUTATIONS[i % GRADIENT_MUTATIONS.length]!;
            const name = `step-fuzz-${i}`;
            const entry: { kind: string; codes: readonly number[] } = { kind, codes: [] };
            const c = scriptedClient(pool.url, {
              token: TOKEN, hello: name,
              onAssign: (ws, msg) => {
                const unit = { id: msg.microBatches[0]!.id, count: unitCount(msg.microBatches[0]!.indices) };
                const base = wellFormedGradient(model, msg.step, unit, rng);
                const mutation = mutateGradient(kind, base, { model, unitIds: msg.microBatches.map((u) => u.id), maxPayload: limit }, rng);
                entry.codes = mutation.codes;
                ws.send(mutation.data);
              },
              // A fuzzer that still gets work had a mutated frame accepted: leave, so the run does not wait on it.
              onMoreWork: (ws) => ws.terminate(),
            });
            sent.push({ name, step, kind, get codes() { return entry.codes; }, outcome: c.outcome });
            joined.push(c.welcomed);
          }
          await Promise.all(joined);
        },
      });
      const result = await runTrainer(executor, cfg);
      assert.equal(pool.workerCount(), 2, 'only the honest workers are left');
      await pool.close();
      assertUndisturbed(result, steps, ref, cfg);
      for (const h of honest) assert.equal((await h.exited).code, 0, h.output());

      assert.equal(sent.length, totalSteps * fuzzersPerStep);
      const outcomes = await Promise.all(sent.map(async (f) => ({ ...f, codes: f.codes, outcome: await f.outcome })));
      for (const f of outcomes) {
        assert.ok(f.codes.length > 0, `${f.name} (${f.kind}, step ${f.step}) got no assignment`);
        assert.ok(f.codes.includes(f.outcome.code), `${f.name} (${f.kind}, step ${f.step}): closed with ${f.outcome.code} (${f.outcome.reason}), expected ${f.codes.join(' or ')}`);
        const gone = rec.events.find(left(f.name));
        assert.ok(gone, `${f.name}: worker_left logged`);
        assert.ok(Array.isArray(gone.reassigned) && (gone.reassigned as number[]).length === 1, `${f.name}: its one micro-batch was reassigned`);
      }
      for (const kind of GRADIENT_MUTATIONS) assert.ok(outcomes.some((f) => f.kind === kind), `mutation ${kind} was sent`);
      t.diagnostic(`open-step fuzz: ${outcomes.length} mutated results over ${totalSteps} steps (${GRADIENT_MUTATIONS.length} kinds); close codes: ${histogram(outcomes.map((f) => f.outcome.code))}`);
    } finally {
      await pool.close();
    }
  });

  // ---- the coordinator CLI ----------------------------------------------------------------

  const cliArgs = (): string[] => ['--data-dir', data.dir, '--epochs', String(TRAIN.epochs), '--batch-size', String(TRAIN.batchSize), '--micro-batch', String(TRAIN.microBatch),
    '--model', TRAIN.model, '--lr', String(TRAIN.lr), '--seed', String(TRAIN.seed), '--backend', 'wasm'];
  let undisturbedCli: Promise<Checkpoint> | undefined;

  /** The final checkpoint of an undisturbed CLI run (in one process: worker count never changes the weights). */
  function cliReference(): Promise<Checkpoint> {
    undisturbedCli ??= (async () => {
      const dir = join(data.dir, 'cli-reference');
      const ref = spawnNode('reference', COORDINATOR_CLI, ['start', '--local', ...cliArgs(), '--checkpoint-dir', dir]);
      procs.add(ref);
      assert.equal((await ref.exited).code, 0, ref.output());
      const checkpoint = await readCheckpointFile(join(dir, checkpointFile(totalSteps)));
      assert.ok(sameState(checkpoint.state, reference.state), 'the CLI reference equals the in-process reference');
      return checkpoint;
    })();
    return undisturbedCli;
  }

  /** The run's final checkpoint holds the undisturbed run's weights, optimiser state, position and metrics. */
  async function finalCheckpointIsUndisturbed(dir: string): Promise<void> {
    const final = await assertFinalCheckpoint(dir, totalSteps, await cliReference());
    assert.equal(final.epoch, config.epochs);
  }

  it('coordinator CLI with --spawn-workers: its workers SIGKILLed at random steps are restarted by it; final checkpoint is the undisturbed run\'s', async (t: TestContext) => {
    const ck = join(data.dir, 'cli-spawned');
    const rng = new Rng(mixSeed(FAULT_SEED, 5));
    const candidates = Array.from({ length: totalSteps - 2 }, (_, i) => i + 1);
    const killSteps = new Set<number>();
    while (killSteps.size < 3) killSteps.add(candidates.splice(rng.int(candidates.length), 1)[0]!);
    // --min-workers 2: a step needs both slots, so a restarted worker has joined before the next checkpoint.
    const c = spawnNode('coordinator', COORDINATOR_CLI, ['start', ...cliArgs(), '--spawn-workers', '2', '--min-workers', '2', '--checkpoint-every', '1', '--checkpoint-dir', ck]);
    procs.add(c);
    const killed: { step: number; slot: string; pid: number }[] = [];
    // The spawned workers share the coordinator's stdout: their lines name the slot and carry the pid.
    const pidOf = new Map<string, number>();
    c.log.on((e) => {
      if (e.name === 'worker' && e.event === 'welcomed') pidOf.set(String(e.worker), e.pid as number);
      if (e.name !== 'coordinator' || e.event !== 'checkpoint' || !killSteps.has(e.globalStep as number)) return;
      const slot = `local-${1 + rng.int(2)}`;
      const pid = pidOf.get(slot);
      // A missed lookup records pid -1 (the assertions below fail on it) and signals nothing.
      try {
        signalDescendant(pid, 'SIGKILL');
        killed.push({ step: e.globalStep as number, slot, pid: pid! });
      } catch {
        killed.push({ step: e.globalStep as number, slot, pid: -1 });
      }
    });
    const exit = await c.exited;
    assert.equal(exit.code, 0, c.output());
    assert.deepEqual(killed.map((k) => k.step), [...killSteps].sort((a, b) => a - b));
    assert.ok(killed.every((k) => k.pid > 0), 'each kill hit a live process');
    assert.equal(new Set(killed.map((k) => k.pid)).size, killed.length, 'each kill hit a different process');
    const restarts = c.log.filter((e) => e.event === 'spawn_restart');
    assert.equal(restarts.length, killed.length, 'each killed worker was restarted');
    assert.ok(restarts.every((e) => e.signal === 'SIGKILL'));
    const leftEvents = c.log.filter((e) => e.event === 'worker_left' && /connection closed|send failed/.test(String(e.reason)));
    assert.ok(leftEvents.length >= killed.length, 'each death was logged with who and why');
    assert.ok(leftEvents.every((e) => typeof e.workerId === 'number' && typeof e.workerName === 'string' && Array.isArray(e.reassigned)));
    // Every step ran once: one checkpoint per step, in order (epoch ends included).
    const written = c.log.filter((e) => e.event === 'checkpoint').map((e) => e.globalStep as number);
    assert.deepEqual(written, Array.from({ length: totalSteps }, (_, i) => i + 1));
    await finalCheckpointIsUndisturbed(ck);
    t.diagnostic(`spawned workers killed after steps ${killed.map((k) => `${k.step} (${k.slot})`).join(', ')}; restarted by the coordinator`);
  });

  it('the coordinator CLI SIGKILLed after checkpoints and resumed on the same port: workers rejoin, final weights are the undisturbed run\'s', async (t: TestContext) => {
    const root = await mkdtemp(join(tmpdir(), 'flock-faults-cli-'));
    try {
      const common = cliArgs();
      const port = await freePort();
      const url = `ws://127.0.0.1:${port}`;
      const ck = join(root, 'disturbed');
      const args = ['start', ...common, '--workers', '2', '--port', String(port), '--token', TOKEN, '--checkpoint-every', '2', '--checkpoint-dir', ck];
      const rng = new Rng(mixSeed(FAULT_SEED, 4));
      // Kill the first coordinator right after its checkpoint at step 2 or 4, the second after one at 6 or 8.
      const killAt = [2 + 2 * rng.int(2), 6 + 2 * rng.int(2)];
      const coordinators: Proc[] = [];
      const workers: Proc[] = [];
      for (let round = 0; round <= killAt.length; round++) {
        const c = spawnNode(`coordinator-${round + 1}`, COORDINATOR_CLI, round === 0 ? args : [...args, '--resume']);
        procs.add(c);
        coordinators.push(c);
        await c.log.next((e) => e.event === 'listening');
        if (round === 0) for (const n of [1, 2]) workers.push(worker(url, `ext-${n}`, { token: TOKEN }));

        if (round === killAt.length) break;
        const target = killAt[round]!;
        // A synchronous listener: the kill goes out as soon as the line is read.
        await new Promise<void>((resolve) => {
          const fire = (e: LogEvent): boolean => {
            if (e.event !== 'checkpoint' || (e.globalStep as number) < target) return false;
            c.proc.kill('SIGKILL');
            resolve();
            return true;
          };
          if (!c.log.events.some(fire)) {
            const off = c.log.on((e) => {
              if (fire(e)) off();
            });
          }
        });
        assert.equal((await c.exited).signal, 'SIGKILL');
      }
      assert.equal(coordinators.length, killAt.length + 1, 'one coordinator per kill, plus the one that finished');
      assert.ok(coordinators.slice(0, -1).every((c) => c.proc.signalCode === 'SIGKILL'), 'every coordinator but the last was SIGKILLed');
      const last = coordinators.at(-1)!;
      const exit = await last.exited;
      assert.equal(exit.code, 0, last.output());
      for (const w of workers) {
        const e = await w.exited;
        assert.equal(e.code, 0, `${w.name} left on stop: ${w.output()}`);
        // It rejoined by itself after each coordinator death.
        assert.ok(w.log.filter((r) => r.event === 'reconnecting').length >= killAt.length, `${w.name} reconnected after each kill`);
      }

      // Each resumed coordinator continued from a checkpoint its predecessor wrote, at or after the kill point.
      for (let i = 1; i < coordinators.length; i++) {
        const resumed = await coordinators[i]!.log.next((e) => e.event === 'resume');
        const written = coordinators[i - 1]!.log.filter((e) => e.event === 'checkpoint').map((e) => e.globalStep as number);
        assert.ok((resumed.globalStep as number) >= killAt[i - 1]!, `resumed at ${String(resumed.globalStep)}`);
        assert.ok((resumed.globalStep as number) >= Math.max(...written), 'no checkpointed step was lost');
        const joined = new Set(coordinators[i]!.log.filter((e) => e.event === 'worker_joined').map((e) => e.workerName));
        assert.deepEqual([...joined].sort(), ['ext-1', 'ext-2'], 'both external workers rejoined');
      }

      await finalCheckpointIsUndisturbed(ck);
      t.diagnostic(`coordinator killed after checkpoints at steps ${killAt.join(' and ')}; resumed ${coordinators.length - 1} times on port ${port}`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
