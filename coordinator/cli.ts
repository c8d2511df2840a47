#!/usr/bin/env -S node --initial-old-space-size=128
// The `coordinator` command line: parses flags and environment, builds the objects,
// prints results, and maps failures to exit codes. No training logic lives here.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { Command, Option } from 'commander';
import type { Logger } from 'pino';
import { BACKEND_NAMES, type BackendRequest } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, resolveDataDir } from '../shared/data/cifar.js';
import { readImagePng } from '../shared/data/image-file.js';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { LOG_FORMATS, LOG_LEVELS, createLogger, resolveLogFormat, type LogFormat, type LogLevel } from '../shared/logger.js';
import { IMAGE_BYTES, MODEL_NAMES, type ModelName } from '../shared/models/layers.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec } from '../shared/models/spec.js';
import { WIRE_PRECISIONS, type WirePrecision } from '../shared/training/config.js';
import { readCheckpointFile } from './checkpoint.js';
import { floatArg, intArg, reportFailure } from '../shared/cli-options.js';
import { nodeFlagsHint } from '../shared/node-flags.js';
import { evaluateCheckpoint, predictImages } from './evaluate.js';
import { fetchCifar } from './fetch-data.js';
import { createProgressBar } from './progress-bar.js';
import { LocalExecutor } from './local-executor.js';
import { LocalWorkers } from './spawn-workers.js';
import { start } from './start.js';
import { WorkerPool } from './worker-pool.js';
import { nodeSocketFactory } from '../worker/node-socket.js';
import { REJOIN_DEFAULTS } from '../worker/rejoin.js';
import { DEFAULT_MAX_DATA_BYTES } from '../worker/sample-cache.js';
import { Relay } from './relay.js';
import { resolvePoolOptions, type PoolOptions } from './pool-options.js';
import { loadDashboardAssets } from './dashboard/assets.js';
import { joinAuth } from './join/join-auth.js';
import { loadJoinAssets } from './join/join-assets.js';
import { createJoinRoutes } from './join/join-routes.js';
import { createHttpRoutes, type HttpHandler, type HttpRoutesOptions } from './dashboard/http-routes.js';
import { createRunMetrics } from './dashboard/prometheus.js';
import { RunMonitor } from './dashboard/run-monitor.js';
import { StatusLine } from './status-line.js';
import { Arbiter } from './arbiter.js';
import { Quarantine } from './quarantine.js';
import { serveDashboard } from './dashboard/serve.js';
import { curvesOf } from './report/curves.js';
import { renderPanels } from './report/render-png.js';
import { replayLog } from './report/run-log.js';

interface CommonFlags {
  backend: BackendRequest;
  logLevel: LogLevel;
  logFormat: LogFormat;
  dataDir?: string;
}

/** The listener and pool flags `start` and `relay` share (poolFlags adds them). */
interface PoolFlags {
  host: string;
  port: number;
  token?: string;
  insecure?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  heartbeatMs: number;
  stepTimeout: number;
  stepTimeoutFloor: number;
  maxAttempts: number;
  helloTimeoutMs: number;
  headersTimeoutMs: number;
  maxConnections: number;
  maxPending: number;
}

interface StartFlags extends CommonFlags, PoolFlags {
  local?: boolean;
  workers: number;
  spawnWorkers: number;
  bindWorkers?: boolean;
  minWorkers?: number;
  model?: ModelName;
  epochs?: number;
  batchSize?: number;
  microBatch?: number;
  lr?: number;
  momentum?: number;
  weightDecay?: number;
  seed?: number;
  reduceGroup?: number;
  wirePrecision?: WirePrecision;
  checkpointDir: string;
  checkpointEvery: number;
  resume?: boolean;
  exportDir?: string;
  fetchMissing?: boolean;
  http: boolean;
  auditRate: number;
  auditSeed: number;
}

const common = (cmd: Command): Command =>
  cmd
    .addOption(new Option('--backend <name>', 'compute backend: auto picks tensorflow (tfjs-node-gpu/tfjs-node) if installed, else webgpu on a hardware GPU adapter, else wasm, else cpu').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--data-dir <dir>', 'CIFAR-10 binary folder (cifar-10-batches-bin); default $FLOCK_DATA_DIR, else ./data/cifar-10-batches-bin')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'auto: pretty on a terminal, JSON lines otherwise; json: one JSON object per line (for machines); pretty: for people').choices(LOG_FORMATS).default('auto'));

/**
 * Adds the flags of a workers' listener and its pool, for `start` and `relay` alike; `port`
 * and `maxAttempts` say what each command does with them.
 */
const poolFlags = (cmd: Command, texts: { readonly port: string; readonly maxAttempts: string; readonly token: string }): Command =>
  cmd
    .option('--host <host>', 'address to listen on (non-loopback requires --token or --insecure)', '127.0.0.1')
    .option('--port <port>', texts.port, intArg(0, 65535), 0)
    .option('--token <token>', texts.token)
    .option('--insecure', 'allow listening on a non-loopback address without a token, or with a token but without TLS')
    .option('--tls-cert <file>', 'PEM certificate: serve wss:// (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--heartbeat-ms <ms>', 'ping workers this often; one that answers none of 3 pings in a row is dropped', intArg(100), 5000)
    .option('--step-timeout <ms>', 'ceiling of the wait for a worker\'s next result: one that returns nothing for this long is dropped and its work reassigned', intArg(100), 120000)
    .option('--step-timeout-floor <ms>', 'the wait for a result is 10x the fleet\'s recent median time per result, but at least this (and at most --step-timeout)', intArg(100), 10000)
    .option('--max-attempts <n>', texts.maxAttempts, intArg(1), 5)
    .option('--hello-timeout-ms <ms>', 'close connections that do not say hello within this', intArg(100), 10000)
    .option('--headers-timeout-ms <ms>', 'close connections whose HTTP upgrade request is not complete within this', intArg(100), 10000)
    .option('--max-connections <n>', 'open connections at most, workers included; more are closed at once', intArg(2), 512)
    .option('--max-pending <n>', 'connections that have not said hello yet, at most; more are closed at once', intArg(1), 64);

/** The pool's options from its flags: the TLS files read, the limits as given. */
async function poolOptionsOf(flags: PoolFlags, token: string | undefined): Promise<Partial<PoolOptions>> {
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw new FlockError(ErrorCode.BAD_OPTION, '--tls-cert and --tls-key go together; give both');
  const tls = flags.tlsCert && flags.tlsKey ? { cert: await readFile(flags.tlsCert), key: await readFile(flags.tlsKey) } : undefined;
  return {
    host: flags.host, port: flags.port, token, insecure: flags.insecure ?? false, ...(tls ? { tls } : {}),
    heartbeatMs: flags.heartbeatMs, stepTimeoutMs: flags.stepTimeout, stepTimeoutFloorMs: flags.stepTimeoutFloor,
    maxAttempts: flags.maxAttempts, helloTimeoutMs: flags.helloTimeoutMs, headersTimeoutMs: flags.headersTimeoutMs,
    maxConnections: flags.maxConnections, maxPending: flags.maxPending,
  };
}

function logger(flags: CommonFlags): Logger {
  return createLogger({ level: flags.logLevel, format: flags.logFormat, name: 'coordinator', isTTY: process.stdout.isTTY === true });
}

/**
 * Aborts on the first SIGINT/SIGTERM (graceful: `what` says what happens then); a second one
 * exits at once. Installed before any long operation starts, the download included.
 */
function shutdownSignal(log: Logger, what: string, onForce: () => void = () => undefined): AbortSignal {
  const ctl = new AbortController();
  const handler = (sig: NodeJS.Signals): void => {
    if (ctl.signal.aborted) {
      log.warn({ event: 'shutdown_forced', signal: sig }, 'second signal: exiting now');
      onForce();
      process.exit(130);
    }
    log.info({ event: 'shutdown', signal: sig }, `${sig}: ${what} (again to force)`);
    ctl.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return ctl.signal;
}

/**
 * Downloads CIFAR-10 unless present, with a progress bar on a terminal. Returns false when
 * `signal` stopped it (fetchCifar has then removed its temporary files).
 */
async function fetchWithProgress(dir: string, log: Logger, signal: AbortSignal, url?: string): Promise<boolean> {
  const bar = createProgressBar(process.stderr, { label: 'CIFAR-10' });
  try {
    const result = await fetchCifar({ dir, url, logger: log, signal, onProgress: (received, total) => bar.update(received, total) });
    if (result.downloaded) bar.done();
    return true;
  } catch (err) {
    if (!signal.aborted) throw err;
    bar.done();
    log.info({ event: 'stopped', dir }, 'download stopped; its temporary files were removed');
    return false;
  }
}

/** The dashboard's routes and metrics, and the browser workers' /join, for the pool's HTTP server. */
async function dashboardRoutes(monitor: RunMonitor, opts: HttpRoutesOptions, quarantine: Quarantine, authorized?: (req: IncomingMessage) => void): Promise<{ handle: HttpHandler; close(): void }> {
  const [assets, joinAssets] = await Promise.all([loadDashboardAssets(), loadJoinAssets()]);
  const metrics = createRunMetrics(monitor);
  const join = createJoinRoutes({ tls: opts.tls }, joinAuth(opts.token), joinAssets);
  const routes = createHttpRoutes(opts, { monitor, registry: metrics.registry, assets, join, quarantine, authorized });
  return { handle: routes.handle, close: () => { routes.close(); metrics.close(); } };
}

/** `start --local`: the dashboard on a server of its own, under the rules a workers' port has. */
async function serveLocal(monitor: RunMonitor, listener: Partial<PoolOptions>): Promise<{ url: string; close(): Promise<void> }> {
  const { host, port, token, tls } = resolvePoolOptions(listener);
  return serveDashboard(monitor, { host, port, token, tls, live: true, minWorkers: 0 });
}

/** Logs where the page is; a generated token is shown only on a terminal (never in a log file). */
function announceDashboard(log: Logger, url: string, token: string | undefined, generated: boolean): void {
  log.info({ event: 'dashboard', url, metrics: `${url}metrics` }, `dashboard on ${url}` + (token ? ' (open it with ?token=<token>)' : ''));
  if (token && generated && process.stderr.isTTY) console.error(`dashboard: ${url}?token=${token}`);
}

/** Logs the link that makes a browser tab a worker: a secret derived from the token, never the token. */
function announceJoin(log: Logger, wsUrl: string, token: string | undefined): void {
  const secret = joinAuth(token).linkSecret;
  const url = `${wsUrl.replace(/^ws/, 'http')}/join${secret ? `?k=${secret}` : ''}`;
  log.info({ event: 'join_link', url }, `browser workers: open ${url}`);
}

async function runStart(flags: StartFlags): Promise<number> {
  if (flags.local && (flags.spawnWorkers > 0 || flags.workers > 1)) {
    throw new FlockError(ErrorCode.BAD_OPTION, '--local trains in this process: leave out --spawn-workers and --workers, or drop --local');
  }
  if (flags.bindWorkers === true && flags.spawnWorkers === 0) throw new FlockError(ErrorCode.BAD_OPTION, '--bind-workers binds the workers this coordinator spawns: add --spawn-workers <n>, or leave it out');
  const monitor = new RunMonitor();
  const tty = process.stdout.isTTY === true;
  // The live status line only accompanies pretty lines on a terminal, never JSON.
  const status = tty && resolveLogFormat(flags.logFormat, tty) === 'pretty' ? new StatusLine(process.stdout, monitor) : undefined;
  const follow = status !== undefined || flags.http;
  const log = createLogger({ level: flags.logLevel, format: flags.logFormat, name: 'coordinator', isTTY: tty, destination: status?.stream(), tap: follow ? monitor.ingestLine : undefined });
  process.on('exit', () => status?.close());
  const dataDir = resolveDataDir(flags.dataDir, process.env.FLOCK_DATA_DIR);
  let workers: LocalWorkers | undefined;
  const signal = shutdownSignal(log, 'stopping: a download is removed, training finishes the current step and writes a checkpoint', () => workers?.killNow());
  process.on('exit', () => workers?.killNow());
  const hint = nodeFlagsHint(process.execArgv, 'coordinator');
  if (hint) log.info({ event: 'node_flags', execArgv: process.execArgv }, hint);
  if (flags.fetchMissing && !(await fetchWithProgress(dataDir, log, signal))) return 130;
  const backend = await loadBackend(flags.backend, log);
  const token = flags.token ?? (process.env.FLOCK_TOKEN || undefined) ?? (flags.spawnWorkers > 0 ? randomBytes(24).toString('hex') : undefined);
  let pool: WorkerPool | undefined;
  let microBatch = 1;
  const result = await start({
    train: {
      model: flags.model, epochs: flags.epochs, batchSize: flags.batchSize, microBatch: flags.microBatch,
      lr: flags.lr, momentum: flags.momentum, weightDecay: flags.weightDecay, seed: flags.seed, wirePrecision: flags.wirePrecision, reduceGroup: flags.reduceGroup,
    },
    dataDir,
    checkpointDir: flags.checkpointDir,
    checkpointEvery: flags.checkpointEvery,
    resume: flags.resume ?? false,
    exportDir: flags.exportDir,
  }, {
    logger: log,
    clock: systemClock,
    signal,
    backend,
    onStep: (p) => {
      monitor.step(p);
      if (pool && monitor.liveWorkersDue(p)) monitor.liveWorkers(pool.workerStats(), microBatch);
    },
    executor: async ({ train, validation, resolve, quarantined }) => {
      const listener = await poolOptionsOf(flags, token);
      if (flags.local) {
        const config = resolve(1);
        // No workers' port, but the same page, /metrics and probes on --host:--port (same token rules).
        const served = flags.http ? await serveLocal(monitor, listener) : undefined;
        if (served) announceDashboard(log, served.url, token, false);
        const runtime = new ModelRuntime(backend, modelSpec(config.model));
        return {
          executor: new LocalExecutor(runtime, train, validation, config.seed, systemClock), config,
          close: async () => { runtime.dispose(); await served?.close(); },
        };
      }
      const expected = Math.max(flags.workers, flags.spawnWorkers);
      const config = resolve(expected);
      microBatch = config.microBatch;
      // A resumed run goes on refusing the workers its checkpoint says were quarantined.
      const quarantine = new Quarantine(quarantined);
      if (quarantined.length > 0) {
        log.warn({ event: 'quarantine_restored', names: quarantined.map((e) => e.workerName) }, `still refusing ${quarantined.map((e) => e.workerName).join(', ')}, quarantined before the resumed checkpoint (lift with POST /quarantine/lift)`);
      }
      // An authorized dashboard request (its event stream stays open) holds no --max-pending slot.
      const dashboard = flags.http ? await dashboardRoutes(monitor, { token, tls: listener.tls !== undefined, minWorkers: flags.minWorkers ?? 1 }, quarantine, (req) => pool?.httpAuthorized(req.socket)) : undefined;
      // The coordinator's own computations settle disagreements between workers (issue 12).
      const arbiterRuntime = new ModelRuntime(backend, modelSpec(config.model));
      const arbiter = new Arbiter(arbiterRuntime, { train, validation }, config.seed, backend.name);
      pool = await WorkerPool.listen({ ...listener, minWorkers: flags.minWorkers ?? 1 }, {
        logger: log, clock: systemClock, model: modelSpec(config.model), config, train, validation, http: dashboard?.handle,
        verify: { arbiter, quarantine, auditRate: flags.auditRate, auditSeed: flags.auditSeed },
      });
      if (dashboard) {
        announceDashboard(log, `${pool.url.replace(/^ws/, 'http')}/`, token, flags.token === undefined && !process.env.FLOCK_TOKEN);
        announceJoin(log, pool.url, token);
      }
      if (flags.spawnWorkers > 0) {
        // Under the status line the workers' lines are relayed (it is cleared before each), so
        // they no longer see the terminal: ask for the format they would have chosen on it.
        const relay = status ? { output: (line: string, stream: 'stdout' | 'stderr') => status.writeAbove(`${line}\n`, stream === 'stderr' ? process.stderr : process.stdout) } : {};
        const logFormat = status ? resolveLogFormat(flags.logFormat, tty) : flags.logFormat;
        workers = new LocalWorkers({ count: flags.spawnWorkers, url: pool.url, token, backend: flags.backend, logLevel: flags.logLevel, logFormat, bindCpus: flags.bindWorkers === true, ...relay }, log);
        workers.start();
      }
      await pool.waitForWorkers(expected, signal);
      const running = pool;
      return { executor: pool, config, close: async () => { dashboard?.close(); await running.close(); await workers?.stop(); arbiterRuntime.dispose(); } };
    },
  });
  if (!result.completed) {
    log.info({ event: 'stopped', globalStep: result.globalStep }, 'stopped before the end; continue with --resume');
    return 130;
  }
  return 0;
}

async function runEvaluate(flags: CommonFlags & { checkpoint: string }): Promise<number> {
  const log = logger({ ...flags, logLevel: flags.logLevel === 'info' ? 'warn' : flags.logLevel });
  const checkpoint = await readCheckpointFile(flags.checkpoint);
  const backend = await loadBackend(flags.backend, log);
  const data = await loadCifar(resolveDataDir(flags.dataDir, process.env.FLOCK_DATA_DIR));
  const acc = await evaluateCheckpoint(backend, checkpoint, data);
  console.log(`model ${checkpoint.config.model}, epoch ${checkpoint.epoch}, step ${checkpoint.globalStep}`);
  console.log(`train accuracy:      ${acc.train.accuracy.toFixed(4)} (loss ${acc.train.loss.toFixed(4)}, ${acc.train.count} images)`);
  console.log(`validation accuracy: ${acc.validation.accuracy.toFixed(4)} (loss ${acc.validation.loss.toFixed(4)}, ${acc.validation.count} images)`);
  return 0;
}

async function runPredict(flags: CommonFlags & { checkpoint: string; image?: string; index?: number }): Promise<number> {
  if ((flags.image === undefined) === (flags.index === undefined)) throw new FlockError(ErrorCode.BAD_OPTION, 'give exactly one of --image <file.png> or --index <i>');
  const log = logger({ ...flags, logLevel: flags.logLevel === 'info' ? 'warn' : flags.logLevel });
  const checkpoint = await readCheckpointFile(flags.checkpoint);
  const backend = await loadBackend(flags.backend, log);
  let image: Uint8Array;
  let truth = '';
  if (flags.image !== undefined) {
    image = readImagePng(flags.image);
  } else {
    const { validation } = await loadCifar(resolveDataDir(flags.dataDir, process.env.FLOCK_DATA_DIR));
    const i = flags.index!;
    if (i >= validation.count) throw new FlockError(ErrorCode.BAD_OPTION, `--index ${i} is out of range: the validation set has ${validation.count} images (0..${validation.count - 1})`);
    image = validation.images.slice(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES);
    truth = ` (true class: ${validation.labels[i] === 0 ? 'airplane' : 'bird'})`;
  }
  const [p] = await predictImages(backend, checkpoint, image, 1);
  console.log(`${p!.className}${truth}`);
  for (const [name, prob] of Object.entries(p!.probabilities)) console.log(`  ${name.padEnd(9)} ${prob.toFixed(4)}`);
  return 0;
}

interface FetchFlags {
  dir?: string;
  url?: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

async function runFetch(flags: FetchFlags): Promise<number> {
  const log = createLogger({ level: flags.logLevel, format: flags.logFormat, name: 'coordinator' });
  const dir = resolveDataDir(flags.dir, process.env.FLOCK_DATA_DIR);
  const signal = shutdownSignal(log, 'stopping the download and removing its temporary files');
  if (!(await fetchWithProgress(dir, log, signal, flags.url))) return 130;
  console.log(`CIFAR-10 is ready in ${dir}`);
  return 0;
}

async function runReport(flags: { log: string[]; out: string; width: number; height: number }): Promise<number> {
  const runs = await Promise.all(flags.log.map(async (file) => (await replayLog(file)).snapshot()));
  const { png } = renderPanels(curvesOf(runs), { width: flags.width, height: flags.height });
  await writeFile(flags.out, png);
  console.log(`wrote ${flags.out} (${flags.width}x${flags.height}: loss, accuracy and images/s per epoch of ${runs.map((r) => `${r.label}, ${r.epochs.length} epochs`).join('; ')})`);
  return 0;
}

async function runDashboard(flags: { log: string[]; host: string; port: number; token?: string }): Promise<number> {
  const [monitor, ...others] = await Promise.all(flags.log.map((file) => replayLog(file)));
  if (!monitor) throw new FlockError(ErrorCode.BAD_OPTION, 'give at least one --log');
  monitor.compareWith(others.map((m) => m.snapshot()));
  const served = await serveDashboard(monitor, { host: flags.host, port: flags.port, token: flags.token ?? (process.env.FLOCK_TOKEN || undefined) });
  console.log(`dashboard of ${flags.log.join(', ')} on ${served.url} (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await served.close();
  return 0;
}

interface RelayFlags extends PoolFlags {
  connect: string;
  ca?: string;
  name?: string;
  dataDir?: string;
  maxDataMb: number;
  giveUpAfter: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

async function runRelay(flags: RelayFlags): Promise<number> {
  const log = createLogger({ level: flags.logLevel, format: flags.logFormat, name: 'relay', isTTY: process.stdout.isTTY === true });
  const token = flags.token ?? (process.env.FLOCK_TOKEN || undefined);
  // The same token guards the relay's own listener, under the coordinator's rules.
  const pool = await poolOptionsOf(flags, token);
  const localData = flags.dataDir !== undefined ? await loadCifar(flags.dataDir) : undefined;
  const relay = new Relay({
    url: flags.connect, name: flags.name ?? `relay-${hostname()}-${process.pid}`,
    localData, maxDataBytes: flags.maxDataMb * 2 ** 20, giveUpAfterMs: flags.giveUpAfter,
    pool,
  }, { logger: log, clock: systemClock, socket: nodeSocketFactory({ token, ca: flags.ca !== undefined ? await readFile(flags.ca) : undefined, role: 'relay' }) });
  const stopping = shutdownSignal(log, 'telling this relay\'s workers to stop and leaving upstream');
  stopping.addEventListener('abort', () => void relay.close('relay shutting down'));
  const reason = await relay.run();
  log.info({ event: 'relay_stopped', reason }, `relay stopped: ${reason}`);
  return 0;
}

function main(argv: string[]): void {
  const program = new Command('coordinator')
    .description('Flock coordinator: trains the CIFAR-10 bird/airplane CNNs with workers over WebSockets')
    .showHelpAfterError()
    // Commander's own errors (unknown flag, bad value, missing argument) throw instead of
    // exiting 1, so that fail() maps them to exit 2; subcommands inherit this.
    .exitOverride();
  poolFlags(common(program.command('start').description('train: wait for workers (or spawn local ones, or train in this process with --local)')), {
    port: 'port to listen on (workers and dashboard; with --local the dashboard only); 0 picks a free one (logged as event=listening, or event=dashboard with --local)',
    token: 'shared secret workers must present (default $FLOCK_TOKEN; a random one with --spawn-workers)',
    maxAttempts: 'times one micro-batch may be handed out before the step fails; retries go to workers that have returned results',
  })
    .option('--local', 'train in this process, no workers (the single-process reference)')
    .option('--workers <n>', 'wait for this many workers before the first step', intArg(1), 1)
    .option('--spawn-workers <n>', 'single-machine mode: start n local worker processes (killed on exit)', intArg(0), 0)
    .option('--bind-workers', 'with --spawn-workers on Linux: bind each local worker to its own CPU (taskset, util-linux); the coordinator stays unbound. Off by default: on a machine shared with other jobs a bound worker cannot move away from a busy core')
    .option('--min-workers <n>', 'pause training while fewer workers are connected (default 1)', intArg(1))
    .addOption(new Option('--model <name>', "the recipe's model (default net)").choices(MODEL_NAMES))
    .option('--epochs <n>', 'epochs to train (default 100)', intArg(1))
    .option('--batch-size <n>', 'global batch per step, whatever the number of workers (default 64)', intArg(1))
    .option('--micro-batch <n>', 'samples per unit of work handed to a worker (default: batch size / workers at start)', intArg(1))
    .option('--lr <rate>', 'SGD learning rate (default 0.01)', floatArg(0))
    .option('--momentum <m>', 'SGD momentum, PyTorch semantics (default 0)', floatArg(0, 1))
    .option('--weight-decay <wd>', "L2 weight decay, PyTorch semantics (grad += wd*w); the recipe's l2 term λΣw² with λ=0.001 is --weight-decay 0.002 (default 0)", floatArg(0))
    .option('--seed <n>', 'seed for initialisation, shuffling and dropout (default 0)', intArg(0, 0xffffffff))
    .option('--reduce-group <n>', 'micro-batches per reduce group: the step sums groups of n micro-batches in order, each summed in order (0 = one group); relays take whole groups; the weights depend on n, never on the fleet (default 0)', intArg(0))
    .addOption(new Option('--wire-precision <p>', 'tensors on the wire: float32 (exact, default) or float16 (LOSSY: half the bytes, results no longer bit-identical)').choices(WIRE_PRECISIONS))
    .option('--checkpoint-dir <dir>', 'where checkpoints and the final model go', './checkpoints')
    .option('--checkpoint-every <steps>', 'also checkpoint every this many steps (0 = at epoch ends only)', intArg(0), 0)
    .option('--resume', 'continue from the newest checkpoint in --checkpoint-dir')
    .option('--export-dir <dir>', 'where the final TensorFlow.js model goes (default <checkpoint-dir>/model)')
    .option('--fetch-missing', 'download CIFAR-10 first if the data folder is missing')
    .option('--audit-rate <r>', 'probability that a step has one micro-batch computed a second time by another worker, which cannot tell it is an audit (0 = never)', floatArg(0, 1), 0.05)
    .option('--audit-seed <n>', 'seed of the audit draws (which steps, which micro-batch)', intArg(0, 0xffffffff), 0)
    .option('--no-http', 'serve no dashboard, /metrics, /healthz or /readyz on the workers\' port (plain requests get 426); with --local, listen on no port at all')
    .action(async (flags: StartFlags) => finish(await runStart(flags)));
  const relay = program.command('relay').description('relay for a worker site: workers connect here as to a coordinator; it takes whole reduce groups upstream and sends one sum per group')
    .requiredOption('--connect <url>', 'upstream: the coordinator (or another relay), ws://host:port or wss://')
    .option('--ca <file>', 'PEM CA certificate to trust for an upstream wss://')
    .option('--name <name>', 'name shown in upstream\'s logs (default relay-<hostname>-<pid>)')
    .option('--data-dir <dir>', 'optional local CIFAR-10 copy; if identical to upstream\'s, images are not sent to this relay')
    .option('--max-data-mb <mb>', 'memory the images sent by upstream may take at most', intArg(1, 1 << 20), DEFAULT_MAX_DATA_BYTES / 2 ** 20)
    .option('--give-up-after <ms>', 'when the link to upstream is lost the relay rejoins (its workers stay connected); exit with an error after failing to for this long', intArg(1), REJOIN_DEFAULTS.giveUpAfterMs);
  poolFlags(relay, {
    port: 'port to listen on; 0 picks a free one (logged as event=relay_ready)',
    token: 'shared secret for upstream and for this relay\'s workers (default $FLOCK_TOKEN)',
    maxAttempts: 'times one micro-batch may be handed out before the relay gives its work back upstream',
  })
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'auto: pretty on a terminal, JSON lines otherwise').choices(LOG_FORMATS).default('auto'))
    .action(async (flags: RelayFlags) => finish(await runRelay(flags)));
  common(program.command('evaluate').description('print train and validation accuracy of a checkpoint'))
    .requiredOption('--checkpoint <file>', 'a checkpoint file (checkpoints/checkpoint-*.flock)')
    .action(async (flags: CommonFlags & { checkpoint: string }) => finish(await runEvaluate(flags)));
  common(program.command('predict').description('classify one image with a checkpoint'))
    .requiredOption('--checkpoint <file>', 'a checkpoint file')
    .option('--image <file>', 'a PNG image (resized to 32x32)')
    .option('--index <i>', 'an image of the validation set', intArg(0))
    .action(async (flags: CommonFlags & { checkpoint: string; image?: string; index?: number }) => finish(await runPredict(flags)));
  program.command('fetch-data').description('download and verify CIFAR-10 (binary version, 162 MB)')
    .option('--dir <dir>', 'target folder (default $FLOCK_DATA_DIR, else ./data/cifar-10-batches-bin)')
    .option('--url <url>', 'where to download the archive from, e.g. a mirror (default the official URL; the MD5 is checked either way)')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'json or pretty').choices(LOG_FORMATS).default('pretty'))
    .action(async (flags: FetchFlags) => finish(await runFetch(flags)));
  program.command('report').description('draw the loss, accuracy and images/s curves of finished runs into a PNG')
    .requiredOption('--log <file...>', 'JSON log(s) of `coordinator start`; several are overlaid')
    .requiredOption('--out <file>', 'PNG to write, e.g. curves.png')
    .option('--width <px>', 'image width', intArg(300, 8000), 1200)
    .option('--height <px>', 'image height', intArg(150, 8000), 400)
    .action(async (flags: { log: string[]; out: string; width: number; height: number }) => finish(await runReport(flags)));
  program.command('dashboard').description('serve the dashboard page of a finished run from its JSON log')
    .requiredOption('--log <file...>', 'JSON log(s) of `coordinator start`; the epoch curves of the second and later are overlaid on the first\'s')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port; 0 picks a free one', intArg(0, 65535), 8080)
    .option('--token <token>', 'require this token (default $FLOCK_TOKEN; none on loopback)')
    .action(async (flags: { log: string[]; host: string; port: number; token?: string }) => finish(await runDashboard(flags)));
  program.parseAsync(argv).catch(fail);
}

function finish(code: number): void {
  process.exitCode = code;
}

function fail(err: unknown): void {
  process.exitCode = reportFailure('coordinator', err, (line) => console.error(line));
}

process.on('unhandledRejection', (err) => {
  fail(err);
  process.exit(1);
});
main(process.argv);
