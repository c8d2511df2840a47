// Synthetic CIFAR-10 files in the exact binary format, for tests and offline demos.
// "Airplanes" are a small pale shape on a bluish sky gradient, "birds" a dark blob on a
// greenish background; per-image colour, size and position jitter plus pixel noise keep
// every image different, while the colour cue lets the recipe's small CNNs exceed 90%
// validation accuracy within an epoch or two of a few hundred images.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Rng, mixSeed, shuffleInPlace } from '../random.js';
import { IMAGE_SIZE } from '../models/layers.js';
import { RECORD_BYTES, TEST_FILE, TRAIN_FILES } from './cifar.js';

export interface SyntheticOptions {
  /** Records per data_batch_N.bin file (kept and dropped labels together). */
  readonly trainPerFile: number;
  /** Records in test_batch.bin. */
  readonly testCount: number;
  readonly seed: number;
  /** Half-width of the uniform per-pixel noise, in 0..255 units. */
  readonly noise: number;
}

export const SYNTHETIC_DEFAULTS: SyntheticOptions = { trainPerFile: 200, testCount: 200, seed: 1, noise: 24 };

/** What was written: kept (airplane + bird) record counts, as loadCifar will report them. */
export interface SyntheticSummary {
  readonly dir: string;
  readonly train: number;
  readonly validation: number;
  /** Records with other labels, which the loader drops. */
  readonly dropped: number;
}

const META = 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n';
const PLANE = IMAGE_SIZE * IMAGE_SIZE;
const OTHER_LABELS = [1, 3, 4, 5, 6, 7, 8, 9] as const;
type Rgb = [number, number, number];

/** One in eight records gets another label; the rest split evenly (airplane gets the odd one). */
function labelSchedule(n: number, rng: Rng): Uint8Array {
  const others = Math.floor(n / 8);
  const planes = Math.ceil((n - others) / 2);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = i < planes ? 0 : i < n - others ? 2 : OTHER_LABELS[rng.int(OTHER_LABELS.length)]!;
  return shuffleInPlace(labels, rng);
}

const clampByte = (v: number): number => Math.max(0, Math.min(255, Math.round(v)));
const inEllipse = (x: number, y: number, cx: number, cy: number, rx: number, ry: number): boolean =>
  ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;

/** Pixel colour of an image of `style` ('sky' for airplanes, 'ground' otherwise) before noise. */
function painter(style: 'sky' | 'ground', rng: Rng): (x: number, y: number) => Rgb {
  const tint = rng.uniform(-20, 20);
  const cx = 16 + rng.uniform(-6, 6);
  const cy = 16 + rng.uniform(-6, 6);
  if (style === 'sky') {
    const len = rng.uniform(5, 10);
    const span = rng.uniform(4, 9);
    const grey = rng.uniform(190, 240);
    return (x, y) => {
      if (inEllipse(x, y, cx, cy, len, 1.8) || inEllipse(x, y, cx, cy, 1.8, span)) return [grey, grey, grey + 5];
      const t = y / (IMAGE_SIZE - 1);
      return [110 + 60 * t + tint, 155 + 40 * t + tint, 225 + 10 * t];
    };
  }
  const r = rng.uniform(5, 9);
  return (x, y) => {
    if (inEllipse(x, y, cx, cy, r, r * 0.8)) return [80 + tint, 55 + tint / 2, 35];
    const t = y / (IMAGE_SIZE - 1);
    return [95 + 30 * t + tint, 135 + 15 * t + tint, 70 + 10 * t];
  };
}

/** One 3,073-byte record: label, then the R, G and B planes. */
function writeRecord(out: Uint8Array, at: number, label: number, rng: Rng, noise: number): void {
  out[at] = label;
  const style = label === 0 ? 'sky' : label === 2 ? 'ground' : rng.next() < 0.5 ? 'sky' : 'ground';
  const paint = painter(style, rng);
  for (let y = 0; y < IMAGE_SIZE; y++) {
    for (let x = 0; x < IMAGE_SIZE; x++) {
      const rgb = paint(x, y);
      const p = y * IMAGE_SIZE + x;
      for (let c = 0; c < 3; c++) out[at + 1 + c * PLANE + p] = clampByte(rgb[c]! + rng.uniform(-noise, noise));
    }
  }
}

function batchFile(records: number, rng: Rng, noise: number): { bytes: Uint8Array; kept: number } {
  const labels = labelSchedule(records, rng);
  const bytes = new Uint8Array(records * RECORD_BYTES);
  let kept = 0;
  labels.forEach((label, i) => {
    writeRecord(bytes, i * RECORD_BYTES, label, rng, noise);
    if (label === 0 || label === 2) kept++;
  });
  return { bytes, kept };
}

/** Writes data_batch_1..5.bin, test_batch.bin and batches.meta.txt into `dir`; same seed, same bytes. */
export async function writeSyntheticCifar(dir: string, opts: Partial<SyntheticOptions> = {}): Promise<SyntheticSummary> {
  const o = { ...SYNTHETIC_DEFAULTS, ...opts };
  await mkdir(dir, { recursive: true });
  let train = 0;
  let total = 0;
  for (const [i, file] of TRAIN_FILES.entries()) {
    const { bytes, kept } = batchFile(o.trainPerFile, new Rng(mixSeed(o.seed, i)), o.noise);
    await writeFile(join(dir, file), bytes);
    train += kept;
    total += o.trainPerFile;
  }
  const test = batchFile(o.testCount, new Rng(mixSeed(o.seed, TRAIN_FILES.length)), o.noise);
  await writeFile(join(dir, TEST_FILE), test.bytes);
  await writeFile(join(dir, 'batches.meta.txt'), META);
  total += o.testCount;
  return { dir, train, validation: test.kept, dropped: total - train - test.kept };
}
