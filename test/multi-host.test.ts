// Flock across hosts with their own network stacks (issue 10): Linux network namespaces from
// scripts/netsim (a coordinator host, three worker hosts, a router), ordinary coordinator and
// worker CLIs inside them over wss:// with a CA made here and a token, the coordinator on a
// non-loopback address. Each scenario disturbs the network (latency and jitter through delay
// relays, a 20 Mbit/s link, a partitioned worker, the coordinator's link down for 10 s, workers
// with the wrong CA or token) and must end with the undisturbed run's checkpoint bit for bit,
// every step checkpointed exactly once, and nothing of the harness left behind.
// Needs root (CI runs as root); elsewhere it skips with the reason, except under CI=true.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { readCheckpointFile, type Checkpoint } from '../coordinator/checkpoint.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { writeSelfSignedCert } from '../scripts/netsim/certs.js';
import { canCreateNamespaces } from '../scripts/netsim/ip.js';
import { listNamespaces } from '../scripts/netsim/ip.js';
import { NetSim, sweepStale, type Host } from '../scripts/netsim/topology.js';
import { fileURLToPath } from 'node:url';
import { COORDINATOR_CLI, WORKER_CLI, reap, spawnNode, type Proc } from './child-procs.js';
import type { LogEvent } from './log-recorder.js';
import { assertCheckpointedOnce, assertFinalCheckpoint, checkpointFile } from './reference-run.js';

const TRAIN = { model: 'net', epochs: 2, batchSize: 32, microBatch: 8, lr: 0.05, seed: 11 } as const;
/** 210 training images: 6 steps of 32 per epoch. */
const TOTAL_STEPS = 12;
const PORT = 7070;
const TOKEN = 'netsim-token';
/** Pings every 500 ms: a peer silent for 1.5 s is dropped (the heartbeat window). */
const HEARTBEAT_MS = 500;
const inCi = process.env.CI === 'true';


interface Run {
  readonly sim: NetSim;
  readonly coordinator: Proc;
  readonly workers: Map<string, Proc>;
  readonly checkpointDir: string;
  /** Starts a worker CLI on `host` connecting to `url` (default: the coordinator directly). */
  worker(host: Host, name: string, opts?: { url?: string; ca?: string; token?: string }): Proc;
}

describe('multi-host: network namespaces', { timeout: 300_000 }, () => {
  let root: string;
  let dataDir: string;
  let caFile: string;
  let wrongCaFile: string;
  let certFile: string;
  let keyFile: string;
  let unavailable: string | undefined;
  let reference: Checkpoint;
  const procs = new Set<Proc>();
  const sims = new Set<NetSim>();

  const common = (): string[] => ['--data-dir', dataDir, '--epochs', String(TRAIN.epochs), '--batch-size', String(TRAIN.batchSize), '--micro-batch', String(TRAIN.microBatch),
    '--model', TRAIN.model, '--lr', String(TRAIN.lr), '--seed', String(TRAIN.seed), '--backend', 'wasm', '--checkpoint-every', '1', '--log-format', 'json'];

  before(async () => {
    const probe = await canCreateNamespaces(`flkprobe-${process.pid}`);
    if (!probe.ok) {
      unavailable = probe.reason;
      return;
    }
    root = await mkdtemp(join(tmpdir(), 'flock-netsim-'));
    dataDir = join(root, 'data');
    await writeSyntheticCifar(dataDir, { trainPerFile: 48, testCount: 48, seed: 5 });
    // The coordinator's certificate is its own CA; workers trust it with --ca. Its names cover the
    // coordinator's address and the router's address on every link (where the delay relays listen).
    const ips = ['10.200.0.2', ...[0, 1, 2, 3].map((i) => `10.200.${i}.1`)];
    ({ cert: certFile, key: keyFile, ca: caFile } = await writeSelfSignedCert(root, 'coordinator', ips));
    ({ ca: wrongCaFile } = await writeSelfSignedCert(root, 'someone-else', ips));
    // The undisturbed run: in one process (the worker count never changes the weights).
    const ref = spawnNode('reference', COORDINATOR_CLI, ['start', '--local', ...common(), '--checkpoint-dir', join(root, 'reference')]);
    procs.add(ref);
    assert.equal((await ref.exited).code, 0, ref.output());
    reference = await readCheckpointFile(join(root, 'reference', checkpointFile(TOTAL_STEPS)));
  });

  after(async () => {
    await reap(procs);
    for (const s of sims) await s.destroy();
    if (root) await rm(root, { recursive: true, force: true });
  });

  function available(t: TestContext): boolean {
    if (unavailable === undefined) return true;
    if (inCi) assert.fail(`CI=true but the multi-host tests cannot run: ${unavailable}`);
    t.skip(unavailable);
    return false;
  }

  /** Builds the hosts, runs `scenario` with a coordinator started on the coordinator host, then checks the outcome and the cleanup. */
  async function withRun(t: TestContext, name: string, coordinatorArgs: string[], scenario: (run: Run) => Promise<void>): Promise<Run> {
    const sim = await NetSim.create({ workers: 3 });
    sims.add(sim);
    const stopSignals = sim.destroyOnSignals((code) => process.exit(code));
    const checkpointDir = join(root, name);
    const workers = new Map<string, Proc>();
    let run: Run | undefined;
    try {
      const coordinator = spawnNode('coordinator', COORDINATOR_CLI,
        ['start', ...common(), '--host', sim.coordinator.address, '--port', String(PORT), '--tls-cert', certFile, '--tls-key', keyFile,
          '--heartbeat-ms', String(HEARTBEAT_MS), '--checkpoint-dir', checkpointDir, ...coordinatorArgs],
        { FLOCK_TOKEN: TOKEN }, sim.execPrefix(sim.coordinator));
      procs.add(coordinator);
      const listening = await Promise.race([coordinator.log.next((e) => e.event === 'listening'), coordinator.exited.then(() => undefined)]);
      assert.ok(listening, `coordinator did not start:\n${coordinator.output()}`);
      assert.equal(listening.url, `wss://${sim.coordinator.address}:${PORT}`);
      run = {
        sim, coordinator, workers, checkpointDir,
        worker(host, wname, opts = {}) {
          const w = spawnNode(wname, WORKER_CLI,
            ['--connect', opts.url ?? `wss://${sim.coordinator.address}:${PORT}`, '--ca', opts.ca ?? caFile, '--backend', 'wasm', '--name', wname, '--log-level', 'info', '--log-format', 'json'],
            { FLOCK_TOKEN: opts.token ?? TOKEN }, sim.execPrefix(host));
          procs.add(w);
          workers.set(wname, w);
          return w;
        },
      };
      await scenario(run);
      const exit = await coordinator.exited;
      assert.equal(exit.code, 0, coordinator.output());
      await checkOutcome(run);
      return run;
    } finally {
      await reap([...(run ? [run.coordinator] : []), ...workers.values()]);
      await sim.destroy();
      stopSignals();
      sims.delete(sim);
      const left = await sim.leftovers();
      assert.deepEqual(left, { namespaces: [], pids: [], links: [] }, `the harness left ${JSON.stringify(left)}`);
      t.diagnostic(`${sim.runId}: namespaces, links and processes removed`);
    }
  }

  /** Every step checkpointed exactly once and in order; the final checkpoint is the undisturbed run's. */
  async function checkOutcome(run: Run): Promise<void> {
    assertCheckpointedOnce(run.coordinator.log.events, TOTAL_STEPS);
    await assertFinalCheckpoint(run.checkpointDir, TOTAL_STEPS, reference);
  }

  const joinedAs = (name: string) => (e: LogEvent): boolean => e.event === 'worker_joined' && e.workerName === name;
  const leftAs = (name: string) => (e: LogEvent): boolean => e.event === 'worker_left' && e.workerName === name;
  /** Training images a joining worker said it still holds. */
  const heldTrain = (e: LogEvent): number => (e.imagesHeld as { train: number }).train;
  const checkpointAt = (step: number) => (e: LogEvent): boolean => e.event === 'checkpoint' && (e.globalStep as number) >= step;

  it('30 ± 5 ms round trip on every worker path (delay relays in the router)', async (t) => {
    if (!available(t)) return;
    await withRun(t, 'latency', ['--workers', '3'], async (run) => {
      for (const [i, host] of run.sim.workers.entries()) {
        const relay = await run.sim.startRelay(host, run.sim.coordinator, PORT, { delayMs: 15, jitterMs: 2.5, seed: i + 1 });
        run.worker(host, host.name, { url: `wss://${relay.address}:${relay.port}` });
      }
      await run.coordinator.exited;
      // Every worker came through its relay: the coordinator saw the router's address.
      for (const host of run.sim.workers) {
        const joined = await run.coordinator.log.next(joinedAs(host.name));
        assert.match(String(joined.remote), new RegExp(`^(::ffff:)?${run.sim.coordinator.gateway.replaceAll('.', '\\.')}(:|$)`), `${host.name} went through the relay`);
      }
      for (const w of run.workers.values()) assert.equal((await w.exited).code, 0, w.output());
    });
  });

  it('one worker on a 20 Mbit/s link', async (t) => {
    if (!available(t)) return;
    await withRun(t, 'slow-link', ['--workers', '3'], async (run) => {
      const slow = run.sim.workers[1]!;
      await run.sim.shape(slow, { mbit: 20 });
      t.diagnostic(await run.sim.qdiscs(slow));
      for (const host of run.sim.workers) run.worker(host, host.name);
      await run.coordinator.exited;
      for (const w of run.workers.values()) assert.equal((await w.exited).code, 0, w.output());
      assert.match(await run.sim.qdiscs(slow), /tbf .*rate 20Mbit/);
    });
  });

  it('a worker partitioned for longer than the heartbeat window: dropped, its work reassigned, rejoins', async (t) => {
    if (!available(t)) return;
    // --min-workers 3: training waits for the partitioned worker, so the run cannot end before it rejoins.
    await withRun(t, 'partition', ['--workers', '3', '--min-workers', '3'], async (run) => {
      for (const host of run.sim.workers) run.worker(host, host.name);
      const victim = run.sim.workers[2]!;
      await run.coordinator.log.next(checkpointAt(3));
      await run.sim.linkDown(victim);
      const dropped = await run.coordinator.log.next(leftAs(victim.name));
      // The worker too notices the silence, then fails to reconnect while the link is down.
      await run.workers.get(victim.name)!.log.next((e) => e.event === 'reconnecting');
      await run.sim.linkUp(victim);
      const joins = (): LogEvent[] => run.coordinator.log.filter(joinedAs(victim.name));
      await run.coordinator.log.next((e) => joinedAs(victim.name)(e) && joins().length >= 2);
      await run.coordinator.exited;
      assert.match(String(dropped.reason), /heartbeat|ping|timeout|no result/i);
      const reassigned = run.coordinator.log.filter(leftAs(victim.name)).flatMap((e) => e.reassigned as unknown[]);
      assert.ok(reassigned.length > 0, `the partitioned worker's micro-batches were reassigned: ${JSON.stringify(dropped)}`);
      assert.ok(heldTrain(joins().at(-1)!) > 0, 'it rejoined with the images it kept');
      for (const w of run.workers.values()) assert.equal((await w.exited).code, 0, w.output());
      t.diagnostic(`dropped: ${String(dropped.reason)}; reassigned ${reassigned.length} micro-batch(es)`);
    });
  });

  it("the coordinator host's link down for 10 s: workers keep their state and reconnect", async (t) => {
    if (!available(t)) return;
    // --min-workers 3: the run pauses until every worker is back, so each one's rejoin is part
    // of the run rather than a race with its end.
    await withRun(t, 'coordinator-down', ['--workers', '3', '--min-workers', '3'], async (run) => {
      for (const host of run.sim.workers) run.worker(host, host.name);
      await run.coordinator.log.next(checkpointAt(3));
      await run.sim.linkDown(run.sim.coordinator);
      const downAt = Date.now();
      // Every worker notices the silence while the link is down.
      await Promise.all([...run.workers.values()].map((w) => w.log.next((e) => e.event === 'reconnecting')));
      // The outage length is the scenario's input, not a wait for an event.
      await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - downAt))));
      await run.sim.linkUp(run.sim.coordinator);
      await run.coordinator.exited;
      for (const host of run.sim.workers) {
        const joins = run.coordinator.log.filter(joinedAs(host.name));
        assert.ok(joins.length >= 2, `${host.name} rejoined after the outage`);
        assert.ok(heldTrain(joins.at(-1)!) > 0, `${host.name} kept its images`);
      }
      for (const w of run.workers.values()) assert.equal((await w.exited).code, 0, w.output());
    });
  });

  it('a worker trusting the wrong CA and one with a wrong token are refused; the run goes on', async (t) => {
    if (!available(t)) return;
    await withRun(t, 'refused', ['--workers', '2'], async (run) => {
      const [w1, w2, w3] = run.sim.workers as [Host, Host, Host];
      const wrongCa = run.worker(w3, 'wrong-ca', { ca: wrongCaFile });
      const wrongToken = run.worker(w3, 'wrong-token', { token: 'not-the-token' });
      const badCa = await wrongCa.exited;
      const badToken = await wrongToken.exited;
      assert.notEqual(badCa.code, 0);
      assert.match(wrongCa.output(), /certificate|--ca/i);
      assert.notEqual(badToken.code, 0);
      assert.match(wrongToken.output(), /401|token/i);
      run.worker(w1, w1.name);
      run.worker(w2, w2.name);
      await run.coordinator.exited;
      const joined = new Set(run.coordinator.log.filter((e) => e.event === 'worker_joined').map((e) => e.workerName));
      assert.deepEqual([...joined].sort(), ['w1', 'w2'], 'only the honest workers joined');
      for (const name of ['w1', 'w2']) assert.equal((await run.workers.get(name)!.exited).code, 0);
    });
  });

  it('Ctrl-C removes the namespaces; after a SIGKILL the next run sweeps them', async (t) => {
    if (!available(t)) return;
    const holder = fileURLToPath(new URL('../scripts/netsim/hold-topology.js', import.meta.url));
    const ours = async (runId: string): Promise<string[]> => (await listNamespaces()).filter((n) => n.startsWith(`${runId}-`));
    const start = async (name: string): Promise<{ proc: Proc; runId: string }> => {
      const proc = spawnNode(name, holder, ['--workers', '3']);
      procs.add(proc);
      const ready = await Promise.race([proc.log.next((e) => e.event === 'ready'), proc.exited.then(() => undefined)]);
      assert.ok(ready, proc.output());
      const runId = String(ready.runId);
      assert.equal((await ours(runId)).length, 5, 'router, coordinator and 3 worker namespaces exist');
      return { proc, runId };
    };
    const interrupted = await start('ctrl-c');
    interrupted.proc.proc.kill('SIGINT');
    assert.equal((await interrupted.proc.exited).code, 130, interrupted.proc.output());
    assert.deepEqual(await ours(interrupted.runId), [], 'SIGINT removed every namespace');

    const crashed = await start('crashed');
    crashed.proc.proc.kill('SIGKILL');
    await crashed.proc.exited;
    assert.equal((await ours(crashed.runId)).length, 5, 'a SIGKILLed run cannot clean up');
    const swept = await sweepStale();
    assert.ok(swept.length >= 5 && (await ours(crashed.runId)).length === 0, `the sweep removed the dead run's namespaces: ${swept.join(', ')}`);
  });
});
