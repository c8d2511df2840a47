// Real child processes for tests: the worker and coordinator CLIs started with `node`, their
// JSON log lines parsed into a LogRecorder, and a reaper that leaves none running. Signals go
// through ChildProcess.kill (our own handle), never through a pid lookup.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { LogRecorder, type LogEvent } from './log-recorder.js';

export const WORKER_CLI = fileURLToPath(new URL('../worker/cli.js', import.meta.url));
export const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));

export interface Proc {
  readonly name: string;
  readonly proc: ChildProcess;
  /** Parsed JSON lines of its stdout. */
  readonly log: LogRecorder;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it wrote (stdout and stderr), for failure messages. */
  output(): string;
  /** What it wrote to stderr alone. */
  stderr(): string;
  running(): boolean;
}

/**
 * Starts `node script ...args`; stdout JSON lines go to a LogRecorder. `wrap` is an argv prefix
 * that execs node, e.g. `ip netns exec NS` to run it inside a network namespace.
 */
export function spawnNode(name: string, script: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, wrap: readonly string[] = []): Proc {
  // No token or data folder from the caller's environment leaks in; `env` may set them.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'FLOCK_TOKEN' && k !== 'FLOCK_DATA_DIR'));
  const argv = [...wrap, process.execPath, script, ...args];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...inherited, ...env } });
  const log = new LogRecorder();
  let out = '';
  let err = '';
  let pending = '';
  proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    pending += chunk;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.startsWith('{')) {
        try {
          log.push(JSON.parse(line) as LogEvent);
        } catch {
          // not a log record
        }
      }
    }
  });
  proc.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    err += chunk;
  });
  const exited = once(proc, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return { name, proc, log, exited, output: () => out, stderr: () => err, running: () => proc.exitCode === null && proc.signalCode === null };
}

/** A worker process on `opts.backend` (default wasm); `opts.args` are extra flags (e.g. --ca). */
export function spawnWorker(url: string, name: string, opts: { token?: string; logLevel?: string; backend?: string; args?: readonly string[] } = {}): Proc {
  const args = ['--connect', url, '--backend', opts.backend ?? 'wasm', '--name', name, '--log-level', opts.logLevel ?? 'warn', ...(opts.args ?? [])];
  return spawnNode(name, WORKER_CLI, args, opts.token === undefined ? {} : { FLOCK_TOKEN: opts.token });
}

/**
 * A `coordinator relay` process joined to `url` (token in its environment); resolves with it
 * and its own URL once it listens for workers. `procs` gets it at once, so it is reaped even
 * when it fails to start.
 */
export async function startRelay(url: string, name: string, procs: { add(p: Proc): unknown } | Proc[], opts: { token?: string; args?: readonly string[] } = {}): Promise<{ proc: Proc; url: string }> {
  const proc = spawnNode(name, COORDINATOR_CLI, ['relay', '--connect', url, '--name', name, '--log-format', 'json', '--log-level', 'info', ...(opts.args ?? [])], opts.token === undefined ? {} : { FLOCK_TOKEN: opts.token });
  if (Array.isArray(procs)) procs.push(proc);
  else procs.add(proc);
  const ready = await Promise.race([
    proc.log.next((e) => e.event === 'relay_ready'),
    proc.exited.then((e) => {
      throw new Error(`relay ${name} exited (${e.code ?? e.signal}) before it listened: ${proc.output()}`);
    }),
  ]);
  return { proc, url: String(ready.url) };
}

/** SIGKILLs whatever still runs and waits until every process has exited. */
export async function reap(procs: Iterable<Proc>): Promise<void> {
  const all = [...procs];
  for (const p of all) if (p.running()) p.proc.kill('SIGKILL');
  await Promise.all(all.map((p) => p.exited));
}

/** A port that was free a moment ago (bind to 0, read it, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
