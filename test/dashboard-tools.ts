// Helpers for the dashboard tests: the coordinator and workers as child processes whose
// JSON lines are collected, a Prometheus text parser, and where Debian's chromium is.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const COORDINATOR_CLI = fileURLToPath(new URL('../coordinator/cli.js', import.meta.url));
export const WORKER_CLI = fileURLToPath(new URL('../worker/cli.js', import.meta.url));

export interface Proc {
  readonly child: ChildProcess;
  readonly records: Record<string, unknown>[];
  stderr: string;
  /** Resolves with the first record `match` accepts (already seen or still to come). */
  waitFor(match: (r: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  readonly exited: Promise<number | null>;
}

/** Runs a node CLI, parsing each stdout line that is a JSON object. */
export function runCli(script: string, args: string[]): Proc {
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, FLOCK_DATA_DIR: '', FLOCK_TOKEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const records: Record<string, unknown>[] = [];
  const waiters: { match: (r: Record<string, unknown>) => boolean; resolve: (r: Record<string, unknown>) => void }[] = [];
  let pending = '';
  const proc: Proc = {
    child, records, stderr: '',
    waitFor(match) {
      const seen = records.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        void proc.exited.then((code) => reject(new Error(`process exited (${code}) first; stderr: ${proc.stderr}`)));
      });
    },
    exited: new Promise((resolve) => child.on('close', (code) => resolve(code))),
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      const r = JSON.parse(line) as Record<string, unknown>;
      records.push(r);
      for (const w of waiters.filter((w) => w.match(r))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(r);
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (proc.stderr += chunk));
  return proc;
}

export interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

// Values as Prometheus reads them (Go's strconv.ParseFloat): NaN and Inf in any case, so
// prom-client's "Nan" for an event-loop gauge with no samples yet is valid text.
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|[Nn][Aa][Nn]|[+-]?[Ii][Nn][Ff])( -?\d+)?$/;
const sampleValue = (v: string): number => /^[+-]?inf$/i.test(v) ? (v.startsWith('-') ? -Infinity : Infinity) : /^nan$/i.test(v) ? NaN : Number(v);
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the Prometheus text format (0.0.4); throws on any line that does not fit it. */
export function parsePrometheus(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      if (!name || !['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type ?? '')) throw new Error(`bad TYPE line: ${line}`);
      types.set(name, type!);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: sampleValue(m[4]!) });
  }
  return { samples, types };
}

/** The one sample called `name` (with `labels`, if given). */
export function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples named ${name}`);
  return found[0]!.value;
}

/** Debian's chromium, if installed (`apt-get install -y chromium`). */
export function findChromium(): string | undefined {
  return ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
}
