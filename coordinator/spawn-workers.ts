// Single-machine mode: N worker processes on loopback, owned by the coordinator. They are
// restarted if they crash (a few times) and always killed when the coordinator stops.
// Their output goes straight to this process's stdout and stderr, or, given `output`,
// line by line through it (the terminal's status line must be cleared before each).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { NODE_FLAGS } from '../shared/node-flags.js';
import { allowedCpus, bindToCpu } from './cpu-binding.js';

export interface SpawnOptions {
  readonly count: number;
  readonly url: string;
  readonly token?: string;
  readonly backend: string;
  readonly logLevel: string;
  readonly logFormat: string;
  /** Restarts allowed per worker slot after an abnormal exit. */
  readonly maxRestarts: number;
  /** Grace period between SIGTERM and SIGKILL on stop. */
  readonly killAfterMs: number;
  /** Where the workers' output lines go; default: inherited stdout and stderr. */
  readonly output?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Bind worker i to the i-th CPU this process may use (Linux, taskset); see cpu-binding.ts. */
  readonly bindCpus: boolean;
}

export const SPAWN_DEFAULTS = { maxRestarts: 3, killAfterMs: 5000, backend: 'auto', logLevel: 'info', logFormat: 'json', bindCpus: false } as const;

const WORKER_CLI = fileURLToPath(new URL('../worker/cli.js', import.meta.url));

export class LocalWorkers {
  private readonly children = new Map<number, ChildProcess>();
  private readonly restarts: number[];
  private stopping = false;
  private readonly opts: SpawnOptions;
  /** The CPUs workers are bound to, one per slot in turn; none: unbound. */
  private readonly cpus: readonly number[] | undefined;

  constructor(opts: Partial<SpawnOptions> & Pick<SpawnOptions, 'count' | 'url'>, private readonly logger: Logger) {
    this.opts = { ...SPAWN_DEFAULTS, ...opts };
    this.restarts = new Array<number>(this.opts.count).fill(0);
    this.cpus = this.opts.bindCpus ? allowedCpus() : undefined;
    if (this.opts.bindCpus && !this.cpus) logger.warn({ event: 'bind_failed' }, 'cannot tell which CPUs this process may use (no /proc/self/status: not Linux?); workers run unbound');
  }

  start(): void {
    for (let slot = 0; slot < this.opts.count; slot++) this.launch(slot);
  }

  private launch(slot: number): void {
    const { url, token, backend, logLevel, logFormat } = this.opts;
    const args = [...NODE_FLAGS, WORKER_CLI, '--connect', url, '--name', `local-${slot + 1}`, '--backend', backend, '--log-level', logLevel, '--log-format', logFormat];
    // The token goes through the environment, not argv, so `ps` does not show it.
    const env = { ...process.env, ...(token ? { FLOCK_TOKEN: token } : {}) };
    // The IPC channel is the worker's lifeline: it leaves when this process dies, however.
    const out = this.opts.output;
    const child = spawn(process.execPath, args, { stdio: ['ignore', out ? 'pipe' : 'inherit', out ? 'pipe' : 'inherit', 'ipc'], env });
    this.children.set(slot, child);
    if (this.cpus && child.pid !== undefined) this.bind(slot, child.pid, this.cpus[slot % this.cpus.length]!);
    if (out) {
      for (const name of ['stdout', 'stderr'] as const) {
        const stream = child[name];
        if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => out(line, name));
      }
    }
    child.on('error', (err) => this.logger.error({ event: 'spawn_error', slot, err: err.message }, `could not start local worker ${slot + 1}`));
    child.on('exit', (code, signal) => {
      this.children.delete(slot);
      if (this.stopping || code === 0) return;
      const n = ++this.restarts[slot]!;
      if (n > this.opts.maxRestarts) {
        this.logger.error({ event: 'spawn_gave_up', slot, code, signal }, `local worker ${slot + 1} exited (${signal ?? code}) ${n - 1} times; not restarting it`);
        return;
      }
      this.logger.warn({ event: 'spawn_restart', slot, code, signal, restart: n }, `local worker ${slot + 1} exited (${signal ?? code}); restarting`);
      this.launch(slot);
    });
  }

  /** Binding is best effort (a speed matter only): a failure is logged and the worker runs unbound. */
  private bind(slot: number, pid: number, cpu: number): void {
    void bindToCpu(pid, cpu).then((failed) => {
      if (failed) {
        this.logger.warn({ event: 'bind_failed', slot, pid, cpu, err: failed }, `could not bind local worker ${slot + 1} to CPU ${cpu} (${failed}); it runs unbound (install util-linux for taskset, or leave out --bind-workers)`);
      } else {
        this.logger.info({ event: 'worker_bound', slot, pid, cpu }, `local worker ${slot + 1} bound to CPU ${cpu}`);
      }
    });
  }

  pids(): number[] {
    return [...this.children.values()].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
  }

  /** Stops every child: SIGTERM, then SIGKILL after the grace period. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    const waits = [...this.children.values()].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), this.opts.killAfterMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    });
    await Promise.all(waits);
  }

  /** Synchronous last resort for process 'exit': kill whatever is still running. */
  killNow(): void {
    this.stopping = true;
    for (const child of this.children.values()) child.kill('SIGKILL');
  }
}
