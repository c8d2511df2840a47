// Benchmark section `peer` (used by scripts/bench.ts): Flock against PyTorch 1.13 on the same
// machine, in the same run. Both sides are timed at steady state, after WARMUP_STEPS untimed
// steps: a Flock worker is a fresh process each measurement, and its JIT and WebAssembly
// tier-up take over 100 steps to settle (the median gradient of 32 images, one process: 9.0 ms
// in its first 20 steps, 7.5 in steps 61-80, 6.8 from step 121 on), while a training run
// lasts thousands of steps.
// Each round measures, each pair back to back in alternating order,
//  - `net` and `net-batchnorm` in one Flock process (wasm) against PyTorch with 1 thread,
//  - the same with 2 spawned Flock worker processes against PyTorch with 2 threads, and
//    `net` once more with the 2 workers bound to their own CPUs (--bind-workers);
// both sides run whole SGD steps at batch 64 (Flock: the Trainer of `coordinator start`,
// gradients + reduction + SGD + new weights; PyTorch: zero_grad, forward, loss, backward, step).
// The machine is noisy, so each comparison is repeated and reported as medians.
import { loadavg } from 'node:os';
import pino from 'pino';
import { loadBackend } from '../shared/backends/load.js';
import { loadCifar, subset, type Dataset } from '../shared/data/cifar.js';
import { IMAGE_BYTES, type ModelName } from '../shared/models/layers.js';
import { modelSpec } from '../shared/models/spec.js';
import { Rng } from '../shared/random.js';
import { printTable, realDataDir, trainEpochs } from './bench-distributed.js';
import { PEER_HEADER, median, peerMarkdown, peerRows, type Comparison, type RoundPair, type TorchResult } from './peer-report.js';
import { thisMachine } from './this-machine.js';
import { TorchServer, findTorchPython } from './torch-peer.js';

const logger = pino({ level: 'silent' });
const MODELS: readonly ModelName[] = ['net', 'net-batchnorm'];
const BATCH = 64;
const VALIDATION_IMAGES = 250;
/** Untimed steps before each timed window, at least, on both sides: about one real epoch (10,000 images at batch 64 is 156 steps). */
const WARMUP_STEPS = 150;

export interface PeerOptions {
  /** Timed steps per measurement (Flock: the last epoch of this many steps, after warm-up epochs of WARMUP_STEPS in all). */
  readonly steps: number;
  readonly rounds: number;
  /** FLOCK_TORCH_PYTHON, tried before python3 and /usr/bin/python3. */
  readonly torchPython: string | undefined;
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

/** PyTorch's result for `model`, after checking it trained the same network at the same batch. */
async function torchResult(server: TorchServer, model: ModelName, threads: number): Promise<TorchResult> {
  const r = await server.measure(model);
  const expected = modelSpec(model).parameterCount;
  // A different parameter count means a different network: the comparison would be void.
  if (r.parameters !== expected || r.threads !== threads || r.batch !== BATCH) {
    throw new Error(`torch_bench.py trained ${model} with ${r.parameters} parameters, ${r.threads} threads, batch ${r.batch}; expected ${expected} parameters, ${threads} threads, batch ${BATCH}`);
  }
  return r;
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export async function benchPeer(options: PeerOptions): Promise<void> {
  const found = await findTorchPython(options.torchPython);
  if ('tried' in found) {
    console.log(`PyTorch not found (${found.tried.join('; ')}); peer comparison skipped.`);
    console.log("To run it, install Debian's PyTorch (`sudo apt-get install python3-torch`), or set FLOCK_TORCH_PYTHON to a Python that can `import torch`.");
    return;
  }
  const machine = thisMachine();
  const date = new Date().toISOString();
  const backend = await loadBackend('wasm', logger);
  const data = await peerData(options.steps);
  console.log(`machine: ${machine}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${date}; Node ${process.version}, ${backend.detail}; PyTorch ${found.version} (${found.python})`);
  // Flock's epochs are `steps` steps long (the data is that many batches): warm-up epochs, then the timed one.
  const warmupEpochs = Math.ceil(WARMUP_STEPS / options.steps);
  const epochs = warmupEpochs + 1;
  console.log(`batch ${BATCH}, full SGD steps, ${options.steps} timed steps each after ${warmupEpochs * options.steps} untimed ones (Flock: epoch ${epochs} of ${options.steps}-step epochs, every measurement in fresh worker processes; PyTorch: after as many warm-up steps); data: ${data.label}; ${plural(options.rounds, 'round')}, order alternating`);

  // The last pairing: the same 2 workers, each bound to its own CPU (--bind-workers), so
  // the run says whether binding helps on this machine (net only: the open target).
  const pairings: readonly { workers: number; threads: number; bind?: true; models: readonly ModelName[]; flockSetup: string; torchSetup: string }[] = [
    { workers: 0, threads: 1, models: MODELS, flockSetup: '1 process', torchSetup: '1 thread' },
    { workers: 2, threads: 2, models: MODELS, flockSetup: '2 workers', torchSetup: '2 threads' },
    { workers: 2, threads: 2, bind: true, models: ['net'], flockSetup: '2 workers, bound', torchSetup: '2 threads' },
  ];
  const torchOpts = { batch: BATCH, steps: options.steps, warmup: warmupEpochs * options.steps };
  const servers = new Map<number, TorchServer>();
  const rounds = new Map<string, RoundPair[]>();
  let cpuMs = 0;
  let wallMs = 0;
  /** CPU time / wall time of each 1-thread PyTorch measurement. */
  const torchShares: number[] = [];
  try {
    for (const p of pairings) if (!servers.has(p.threads)) servers.set(p.threads, TorchServer.start(found.python, { ...torchOpts, threads: p.threads }));
    for (let round = 0; round < options.rounds; round++) {
      for (const p of pairings) {
        for (const model of p.models) {
          let flock = NaN;
          let torch = NaN;
          const measureFlock = async (): Promise<void> => {
            const cpu0 = process.cpuUsage();
            const wall0 = performance.now();
            flock = (await trainEpochs({ model, workers: p.workers, data, epochs, backend, ...(p.bind ? { bindWorkers: true } : {}) })).imagesPerSec;
            if (p.workers === 0) {
              const cpu = process.cpuUsage(cpu0);
              cpuMs += (cpu.user + cpu.system) / 1000;
              wallMs += performance.now() - wall0;
            }
          };
          const measureTorch = async (): Promise<void> => {
            const r = await torchResult(servers.get(p.threads)!, model, p.threads);
            torch = r.imagesPerSec;
            if (p.threads === 1 && r.imagesPerCpuSec !== undefined) torchShares.push(r.imagesPerSec / r.imagesPerCpuSec);
          };
          // Alternate who goes first, so neither side always gets the fresher machine.
          for (const measure of round % 2 === 0 ? [measureFlock, measureTorch] : [measureTorch, measureFlock]) await measure();
          const key = `${p.flockSetup}:${model}`;
          rounds.set(key, [...(rounds.get(key) ?? []), { flock, torch }]);
          console.log(`round ${round + 1}/${options.rounds}: ${model}, Flock ${p.flockSetup} ${flock.toFixed(0)} img/s, PyTorch ${p.torchSetup} ${torch.toFixed(0)} img/s: ${(flock / torch).toFixed(2)}×`);
        }
      }
    }
  } finally {
    await Promise.all([...servers.values()].map((s) => s.stop()));
  }
  const comparisons: Comparison[] = pairings.flatMap((p) => p.models.map((model) => ({
    model,
    flockSetup: p.flockSetup,
    torchSetup: p.torchSetup,
    rounds: rounds.get(`${p.flockSetup}:${model}`) ?? [],
  })));
  // A single-threaded process on a quiet machine gets a whole core: CPU time ≈ wall time.
  const flockShare = cpuMs / wallMs;
  const torchShare = torchShares.length > 0 ? median(torchShares) : NaN;
  console.log(`\nshare of a core (CPU time / wall time) of the one-process Flock runs: ${flockShare.toFixed(2)}; of the 1-thread PyTorch runs (median): ${torchShare.toFixed(2)}`);
  if (flockShare < 0.9 || torchShare < 0.9) console.log('warning: other jobs shared the cores during this run, so these ratios (the 2-thread ones most) are unreliable; rerun on a quiet machine');
  console.log(`\nFlock (wasm) against PyTorch ${found.version}, medians of ${plural(options.rounds, 'round')}; ratio: median of the per-round ratios`);
  printTable([...PEER_HEADER], peerRows(comparisons));
  console.log(`\nFor the README (${machine}, ${date.slice(0, 10)}):\n${peerMarkdown(comparisons)}`);
}
