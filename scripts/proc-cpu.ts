// CPU time of other processes, read from Linux's /proc (benchmarks only): one process, or a
// process and all its descendants (a browser's renderer, GPU and utility processes; a
// coordinator's spawned workers). Processes that already exited are not counted.
import { readdirSync, readFileSync } from 'node:fs';

/** Linux's USER_HZ: /proc/PID/stat counts CPU time in these ticks. */
const TICKS_PER_S = 100;

interface ProcStat {
  readonly ppid: number;
  /** User + system CPU seconds so far. */
  readonly cpu: number;
}

function readStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited meanwhile
  }
  // The command name (field 2) may hold spaces: the fields after it start past the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S };
}

/** CPU seconds (user + system) of one process so far; 0 once it has exited. */
export function cpuSeconds(pid: number): number {
  return readStat(pid)?.cpu ?? 0;
}

/** CPU seconds so far of `root` and of each of its living descendants, by pid. */
export function treeCpuSeconds(root: number): Map<number, number> {
  const stats = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) stats.set(Number(name), s);
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      if (p === root) return true;
      p = stats.get(p)?.ppid ?? 0;
    }
    return false;
  };
  const out = new Map<number, number>();
  for (const [pid, s] of stats) if (inTree(pid)) out.set(pid, s.cpu);
  return out;
}

/**
 * CPU seconds the tree under `root` spent between two readings of treeCpuSeconds: processes
 * in both count their difference, processes started in between all their time (what the
 * ones that exited in between spent is lost; keep the window inside their lives).
 */
export function cpuBetween(before: ReadonlyMap<number, number>, after: ReadonlyMap<number, number>): number {
  let sum = 0;
  for (const [pid, cpu] of after) sum += cpu - (before.get(pid) ?? 0);
  return sum;
}
