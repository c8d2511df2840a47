// The one place tests signal a process by pid. `process.kill(-1, sig)` signals every process
// the user may signal and `process.kill(0, sig)` the whole process group, and both succeed,
// so a pid lookup that misses must never reach process.kill: a pid is signalled only when it
// is a positive integer and a live descendant of this test process. An ESLint rule
// (no-restricted-properties in eslint.config.js) forbids process.kill everywhere else.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Whether `pid` is a positive integer pid other than our own. */
export function isChildPidShape(pid: unknown): pid is number {
  return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid;
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields after it start past the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isSafeInteger(ppid) ? ppid : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && readableProc()) return undefined;
    // No /proc (macOS): ask ps.
    try {
      const ppid = Number(execFileSync('ps', ['-o', 'ppid=', '-p', String(pid)], { encoding: 'utf8' }).trim());
      return Number.isSafeInteger(ppid) ? ppid : undefined;
    } catch {
      return undefined;
    }
  }
}

function readableProc(): boolean {
  try {
    readFileSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
}

/** Whether `pid` is a live process below this one (a child, or a child's child…). */
export function isDescendant(pid: number): boolean {
  if (!isChildPidShape(pid)) return false;
  let p = pid;
  for (let hops = 0; hops < 64; hops++) {
    const parent = parentOf(p);
    if (parent === undefined || parent <= 1) return false;
    if (parent === process.pid) return true;
    p = parent;
  }
  return false;
}

/** Sends `signal` to a descendant of this process; throws (signalling nothing) for any other pid. */
export function signalDescendant(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!isChildPidShape(pid)) throw new Error(`refusing to signal pid ${String(pid)}: not a positive child pid`);
  if (!isDescendant(pid)) throw new Error(`refusing to signal pid ${pid}: not a live descendant of this test process`);
  process.kill(pid, signal);
}

/**
 * Whether a process with this pid exists (signal 0 delivers nothing). Also for processes that
 * have left our tree, such as a worker orphaned by its coordinator: that is what tests look for.
 */
export function pidExists(pid: number): boolean {
  if (!isChildPidShape(pid)) throw new Error(`refusing to probe pid ${String(pid)}: not a positive child pid`);
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
