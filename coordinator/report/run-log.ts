// Reads a finished run's JSON log (the coordinator's stdout, worker lines mixed in or not)
// into a run monitor, so the dashboard and the report see it as they saw the live run.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { ErrorCode, FlockError } from '../../shared/errors.js';
import { RunMonitor } from '../dashboard/run-monitor.js';

export async function replayLog(file: string): Promise<RunMonitor> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FlockError(ErrorCode.BAD_OPTION, `cannot read the log ${file}: ${(err as Error).message}`, { cause: err });
  }
  const monitor = new RunMonitor({ label: basename(file) });
  for (const line of text.split('\n')) if (line.startsWith('{')) monitor.ingestLine(line);
  if (monitor.snapshot().epochs.length === 0) {
    throw new FlockError(ErrorCode.BAD_OPTION, `${file} holds no epoch events: give the JSON log of \`coordinator start\` (stdout piped to a file, or --log-format json)`);
  }
  return monitor;
}
