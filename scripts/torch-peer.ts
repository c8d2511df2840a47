// The PyTorch process of the `peer` benchmark: finding a Python that has torch, and keeping
// scripts/torch_bench.py running in --serve mode (one per thread count: torch sizes its
// thread pools once per process) so each measurement costs no `import torch`.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { errorMessage } from '../shared/errors.js';
import { parseTorchOutput, type TorchResult } from './peer-report.js';

const run = promisify(execFile);
const TORCH_SCRIPT = fileURLToPath(new URL('../../scripts/torch_bench.py', import.meta.url));

export type TorchPython = { readonly python: string; readonly version: string } | { readonly tried: string[] };

/** The first of FLOCK_TORCH_PYTHON, python3 and /usr/bin/python3 that imports torch, or why none does. */
export async function findTorchPython(preferred: string | undefined): Promise<TorchPython> {
  const candidates = [...new Set([preferred, 'python3', '/usr/bin/python3'].filter((p): p is string => p !== undefined && p !== ''))];
  const tried: string[] = [];
  for (const python of candidates) {
    try {
      const { stdout } = await run(python, ['-c', 'import torch; print(torch.__version__)'], { timeout: 60_000 });
      return { python, version: stdout.trim() };
    } catch (err) {
      const e = err as { code?: unknown; stderr?: unknown };
      const why = e.code === 'ENOENT' ? 'not found' : (typeof e.stderr === 'string' && e.stderr.trim().split('\n').at(-1)) || errorMessage(err);
      tried.push(`${python}${python === preferred ? ' (FLOCK_TORCH_PYTHON)' : ''}: ${why}`);
    }
  }
  return { tried };
}

/** One `torch_bench.py --serve` process: a model name in, one measurement out. */
export class TorchServer {
  private stderr = '';
  private readonly lines: AsyncIterator<string>;

  private constructor(private readonly child: ChildProcess) {
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    child.on('error', (err) => {
      this.stderr += `\n${err.message}`;
    });
    // Writing to a script that has died fails with EPIPE; measure() reports the exit instead.
    child.stdin!.on('error', () => undefined);
    this.lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  }

  static start(python: string, opts: { threads: number; batch: number; steps: number; warmup: number }): TorchServer {
    if (!existsSync(TORCH_SCRIPT)) throw new Error(`${TORCH_SCRIPT} is missing; run the benchmark from a full checkout`);
    const args = [TORCH_SCRIPT, '--serve', '--threads', String(opts.threads), '--batch', String(opts.batch), '--steps', String(opts.steps), '--warmup', String(opts.warmup)];
    return new TorchServer(spawn(python, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  /** Trains `model` for the warm-up and timed steps; rejects with the script's stderr if it died. */
  async measure(model: string): Promise<TorchResult> {
    this.child.stdin!.write(`${model}\n`);
    const next = await this.lines.next();
    if (next.done === true) {
      await this.exited();
      throw new Error(`torch_bench.py exited (${this.child.exitCode ?? this.child.signalCode}) before measuring ${model}: ${this.stderr.trim() || 'no output'}`);
    }
    const [result] = parseTorchOutput(next.value);
    if (!result || result.model !== model) throw new Error(`torch_bench.py answered ${next.value.slice(0, 200)} when asked for ${model}`);
    return result;
  }

  private async exited(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) await once(this.child, 'exit');
  }

  /** Ends the script's input (it exits on EOF), killing it if it has not gone after 10 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    try {
      this.child.stdin!.end();
      await this.exited();
    } finally {
      clearTimeout(timer);
    }
  }
}
