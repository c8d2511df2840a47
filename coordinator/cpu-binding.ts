// CPU placement of spawned local workers (`--bind-workers`, Linux): each worker is bound to
// its own core with `taskset` from util-linux, as `horovodrun --bind-to core` or Open MPI's
// binding do, so two workers never time-share one core while another core idles. The
// coordinator is not bound: it runs between steps, when the workers wait, on whichever core
// is free.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Parses a Linux CPU list ("0-3,8,10-11") into CPU numbers. */
export function parseCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    for (let c = from; c <= to; c++) cpus.push(c);
  }
  return cpus;
}

/** The CPUs this process may run on (its affinity mask), or undefined where /proc does not say. */
export function allowedCpus(): number[] | undefined {
  try {
    const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    const cpus = m ? parseCpuList(m[1]!) : [];
    return cpus.length > 0 ? cpus : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Binds every thread of process `pid` (threads it starts later inherit the mask) to `cpu`.
 * Resolves with why it could not (taskset missing or refusing), or undefined once bound.
 */
export function bindToCpu(pid: number, cpu: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('taskset', ['--all-tasks', '--pid', '--cpu-list', String(cpu), String(pid)], (err) => resolve(err ? (err.message.split('\n')[0] ?? err.message) : undefined));
  });
}
