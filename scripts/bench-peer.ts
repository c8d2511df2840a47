// Benchmark section `peer` (used by scripts/bench.ts): Flock against PyTorch 1.13 on the same
// machine, in the same run. Each round measures, back to back and in alternating order,
//  - `net` and `net-batchnorm` in one Flock process (wasm) against PyTorch with 1 thread,
//  - the same with 2 spawned Flock worker processes against PyTorch with 2 threads;
// both sides run whole SGD steps at batch 64 (Flock: the Trainer of `coordinator start`,
// gradients + reduction + SGD + new weights; PyTorch: zero_grad, forward, loss, backward, step).
// The machine is noisy, so each comparison is repeated and reported as medians.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pino from 'pino';
import { loadBackend } from '../shared/backends/load.js';
import { loadCifar, subset, type Dataset } from '../shared/data/cifar.js';
import { errorMessage } from '../shared/errors.js';
import { IMAGE_BYTES, isModelName, type ModelName } from '../shared/models/layers.js';
import { modelSpec } from '../shared/models/spec.js';
import { Rng } from '../shared/random.js';
import { printTable, realDataDir, trainEpochs } from './bench-distributed.js';
import { PEER_HEADER, machineName, parseTorchOutput, peerMarkdown, peerRows, type Comparison, type RoundPair } from './peer-report.js';

const run = promisify(execFile);
const logger = pino({ level: 'silent' });
const TORCH_SCRIPT = fileURLToPath(new URL('../../scripts/torch_bench.py', import.meta.url));
const MODELS: readonly ModelName[] = ['net', 'net-batchnorm'];
const BATCH = 64;
const VALIDATION_IMAGES = 250;

export interface PeerOptions {
  /** Timed steps per measurement (Flock: one epoch of this many steps after a warm-up epoch). */
  readonly steps: number;
  readonly rounds: number;
  /** FLOCK_TORCH_PYTHON, tried before python3 and /usr/bin/python3. */
  readonly torchPython: string | undefined;
}

/** The first of the candidate Pythons that imports torch, or why none does. */
async function findTorchPython(preferred: string | undefined): Promise<{ python: string; version: string } | { tried: string[] }> {
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

/** `steps` batches of training images and a small validation set: the real data when present. */
async function peerData(steps: number): Promise<{ train: Dataset; validation: Dataset; label: string }> {
  const trainCount = steps * BATCH;
  const dir = realDataDir();
  if (dir) {
    const sets = await loadCifar(dir);
    if (sets.train.count >= trainCount && sets.validation.count >= VALIDATION_IMAGES) {
      const first = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
      return { train: subset(sets.train, first(trainCount)), validation: subset(sets.validation, first(VALIDATION_IMAGES)), label: `first ${trainCount} images of ${dir}` };
    }
  }
  const random = (count: number, seed: number): Dataset => {
    const rng = new Rng(seed);
    const images = new Uint8Array(count * IMAGE_BYTES);
    for (let i = 0; i < images.length; i++) images[i] = rng.nextUint32() & 255;
    return { images, labels: Uint8Array.from({ length: count }, () => rng.nextUint32() & 1), count };
  };
  return { train: random(trainCount, 1), validation: random(VALIDATION_IMAGES, 2), label: `${trainCount} random images (real data not found)` };
}

async function torchRates(python: string, threads: number, steps: number): Promise<Map<string, number>> {
  const args = [TORCH_SCRIPT, '--threads', String(threads), '--models', MODELS.join(','), '--steps', String(steps), '--warmup', String(steps)];
  const { stdout } = await run(python, args, { timeout: 300_000, maxBuffer: 1 << 20 });
  const results = parseTorchOutput(stdout);
  for (const r of results) {
    // A different parameter count means a different network: the comparison would be void.
    const expected = isModelName(r.model) ? modelSpec(r.model).parameterCount : NaN;
    if (r.parameters !== expected || r.threads !== threads || r.batch !== BATCH) {
      throw new Error(`torch_bench.py trained ${r.model} with ${r.parameters} parameters, ${r.threads} threads, batch ${r.batch}; Flock's has ${expected} parameters (asked: ${threads} threads, batch ${BATCH})`);
    }
  }
  const rates = new Map(results.map((r) => [r.model, r.imagesPerSec]));
  for (const m of MODELS) if (!rates.has(m)) throw new Error(`torch_bench.py printed no result for ${m}: ${stdout.slice(0, 500)}`);
  return rates;
}

function cpuModel(): string {
  let cpuinfo = '';
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // Not Linux: os.cpus() names the model.
  }
  return machineName(cpuinfo, cpus()[0]?.model ?? '', availableParallelism());
}

export async function benchPeer(options: PeerOptions): Promise<void> {
  const found = await findTorchPython(options.torchPython);
  if ('tried' in found) {
    console.log(`PyTorch not found (${found.tried.join('; ')}); peer comparison skipped.`);
    console.log("To run it, install Debian's PyTorch (`sudo apt-get install python3-torch`), or set FLOCK_TORCH_PYTHON to a Python that can `import torch`.");
    return;
  }
  if (!existsSync(TORCH_SCRIPT)) throw new Error(`${TORCH_SCRIPT} is missing; run the benchmark from a full checkout (node dist/scripts/bench.js peer)`);
  const machine = cpuModel();
  const date = new Date().toISOString();
  const backend = await loadBackend('wasm', logger);
  const data = await peerData(options.steps);
  console.log(`machine: ${machine}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${date}; Node ${process.version}, ${backend.detail}; PyTorch ${found.version} (${found.python})`);
  console.log(`batch ${BATCH}, full SGD steps, ${options.steps} timed steps each (Flock: 2nd epoch, after a warm-up epoch; PyTorch: after ${options.steps} warm-up steps); data: ${data.label}; ${options.rounds} round${options.rounds === 1 ? '' : 's'}, order alternating`);

  const pairings = [
    { workers: 0, threads: 1, flockSetup: '1 process', torchSetup: '1 thread' },
    { workers: 2, threads: 2, flockSetup: '2 workers', torchSetup: '2 threads' },
  ] as const;
  const rounds = new Map<string, RoundPair[]>();
  for (let round = 0; round < options.rounds; round++) {
    for (const p of pairings) {
      const flock = new Map<string, number>();
      const measureFlock = async (): Promise<void> => {
        for (const model of MODELS) flock.set(model, (await trainEpochs({ model, workers: p.workers, data, epochs: 2, backend })).imagesPerSec);
      };
      let torch = new Map<string, number>();
      const measureTorch = async (): Promise<void> => {
        torch = await torchRates(found.python, p.threads, options.steps);
      };
      // Alternate who goes first, so neither side always gets the fresher machine.
      for (const measure of round % 2 === 0 ? [measureFlock, measureTorch] : [measureTorch, measureFlock]) await measure();
      for (const model of MODELS) {
        const pair = { flock: flock.get(model)!, torch: torch.get(model)! };
        const key = `${p.workers}:${model}`;
        rounds.set(key, [...(rounds.get(key) ?? []), pair]);
        console.log(`round ${round + 1}/${options.rounds}: ${model}, Flock ${p.flockSetup} ${pair.flock.toFixed(0)} img/s, PyTorch ${p.torchSetup} ${pair.torch.toFixed(0)} img/s: ${(pair.flock / pair.torch).toFixed(2)}×`);
      }
    }
  }
  const comparisons: Comparison[] = pairings.flatMap((p) => MODELS.map((model) => ({
    model,
    flockSetup: p.flockSetup,
    torchSetup: p.torchSetup,
    rounds: rounds.get(`${p.workers}:${model}`) ?? [],
  })));
  console.log(`\nFlock (wasm) against PyTorch ${found.version}, medians of ${options.rounds} round${options.rounds === 1 ? '' : 's'}; ratio: median of the per-round ratios`);
  printTable([...PEER_HEADER], peerRows(comparisons));
  console.log(`\nFor the README (${machine}, ${date.slice(0, 10)}):\n${peerMarkdown(comparisons)}`);
}
