// The machine a benchmark runs on, named as the README names it ("AMD EPYC, 2 cores").
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { machineName } from './peer-report.js';

export function thisMachine(): string {
  let cpuinfo = '';
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // Not Linux: os.cpus() names the model.
  }
  return machineName(cpuinfo, cpus()[0]?.model ?? '', availableParallelism());
}
