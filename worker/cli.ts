#!/usr/bin/env -S node --initial-old-space-size=128
// The `worker` command line: reads flags and environment, builds the logger and backend,
// runs a Worker until the coordinator says stop, and maps failures to exit codes.
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { Command, Option } from 'commander';
import type { Logger } from 'pino';
import { BACKEND_NAMES, type BackendRequest } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { loadCifar } from '../shared/data/cifar.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import { LOG_FORMATS, LOG_LEVELS, createLogger, type LogFormat, type LogLevel } from '../shared/logger.js';
import { intArg, reportFailure } from '../shared/cli-options.js';
import { nodeFlagsHint } from '../shared/node-flags.js';
import { REJOIN_DEFAULTS } from './rejoin.js';
import { DEFAULT_MAX_DATA_BYTES } from './sample-cache.js';
import { Worker } from './worker.js';

interface WorkerFlags {
  connect: string;
  token?: string;
  name?: string;
  backend: BackendRequest;
  dataDir?: string;
  ca?: string;
  giveUpAfter: number;
  maxDataMb: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

/** First SIGINT/SIGTERM leaves gracefully; a second one exits at once. */
function onShutdown(log: Logger, worker: Worker): void {
  let signalled = false;
  const handler = (sig: NodeJS.Signals): void => {
    if (signalled) {
      log.warn({ event: 'shutdown_forced', signal: sig }, 'second signal: exiting now');
      process.exit(130);
    }
    signalled = true;
    log.info({ event: 'shutdown', signal: sig }, `${sig}: leaving the coordinator (again to force)`);
    worker.close();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/**
 * A worker spawned by `coordinator start --spawn-workers` has an IPC channel to it; when the
 * coordinator dies, even by SIGKILL, the channel closes and the worker leaves instead of
 * lingering as an orphan that retries for minutes.
 */
function exitWithParent(log: Logger, worker: Worker): void {
  if (!process.channel) return;
  process.channel.unref();
  process.on('disconnect', () => {
    log.warn({ event: 'parent_gone' }, 'the coordinator that started this worker is gone; leaving');
    worker.close();
  });
}

function checkUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FlockError(ErrorCode.BAD_OPTION, `--connect ${url} is not a URL; use ws://host:port or wss://host:port`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new FlockError(ErrorCode.BAD_OPTION, `--connect must be a ws:// or wss:// URL (got ${u.protocol}//)`);
}

async function run(flags: WorkerFlags): Promise<number> {
  checkUrl(flags.connect);
  const token = flags.token ?? (process.env.FLOCK_TOKEN === '' ? undefined : process.env.FLOCK_TOKEN);
  const name = flags.name ?? `${hostname()}-${process.pid}`;
  const log = createLogger({ level: flags.logLevel, format: flags.logFormat, name: 'worker', isTTY: process.stdout.isTTY === true }).child({ worker: name });
  const ca = flags.ca === undefined ? undefined : await readFile(flags.ca).catch((err: unknown) => {
    throw new FlockError(ErrorCode.BAD_OPTION, `cannot read --ca ${flags.ca} (${errorMessage(err)})`);
  });
  const localData = flags.dataDir === undefined ? undefined : await loadCifar(flags.dataDir);
  const hint = nodeFlagsHint(process.execArgv, 'worker');
  if (hint) log.info({ event: 'node_flags', execArgv: process.execArgv }, hint);
  const backend = await loadBackend(flags.backend, log);
  const worker = new Worker({ url: flags.connect, name, token, ca, localData, giveUpAfterMs: flags.giveUpAfter, maxDataBytes: flags.maxDataMb * 2 ** 20 }, { logger: log, backend });
  onShutdown(log, worker);
  exitWithParent(log, worker);
  const outcome = await worker.run();
  log.info({ event: 'exit', reason: outcome.reason }, `worker stopped: ${outcome.reason}`);
  return 0;
}

function main(argv: string[]): void {
  const program = new Command('worker')
    .description('Flock worker: joins a coordinator over WebSockets and computes gradients for it until training ends')
    .requiredOption('--connect <url>', 'coordinator address, ws://host:port (or wss:// when it serves TLS)')
    .option('--token <token>', 'shared secret the coordinator expects (default $FLOCK_TOKEN); sent as an Authorization header')
    .option('--name <name>', 'name shown in the coordinator\'s logs (default <hostname>-<pid>)')
    .addOption(new Option('--backend <name>', 'compute backend: auto picks tensorflow (tfjs-node-gpu/tfjs-node) if installed, else webgpu on a hardware GPU adapter, else wasm, else cpu').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .option('--data-dir <dir>', 'optional local CIFAR-10 copy (cifar-10-batches-bin); if it is identical to the coordinator\'s, images are not sent over the network')
    .option('--ca <file>', 'PEM CA certificate to trust for wss:// (e.g. the coordinator\'s self-signed certificate)')
    .option('--max-data-mb <mb>', 'memory the images sent by the coordinator may take at most; a coordinator announcing more is refused [ERR_DATA_TOO_LARGE]', intArg(1, 1 << 20), DEFAULT_MAX_DATA_BYTES / 2 ** 20)
    .option('--give-up-after <ms>', 'exit with an error after failing to reach the coordinator for this long', intArg(1), REJOIN_DEFAULTS.giveUpAfterMs)
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'auto: pretty on a terminal, JSON lines otherwise; json: one JSON object per line (for machines); pretty: for people').choices(LOG_FORMATS).default('auto'))
    .showHelpAfterError()
    // Commander's own errors throw instead of exiting 1; fail() maps them to exit 2.
    .exitOverride()
    .action(async (flags: WorkerFlags) => {
      process.exitCode = await run(flags);
    });
  program.parseAsync(argv).catch(fail);
}

function fail(err: unknown): void {
  process.exitCode = reportFailure('worker', err, (line) => console.error(line));
}

process.on('unhandledRejection', (err) => {
  fail(err);
  process.exit(1);
});
main(process.argv);
