// Reader for the binary CIFAR-10 distribution (`cifar-10-batches-bin`). Only airplane and
// bird are kept, as classes 0 and 1; images are stored as NHWC uint8 so that the whole
// training set stays around 30 MB and micro-batches can be shipped without conversion.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { IMAGE_BYTES, IMAGE_CHANNELS, IMAGE_SIZE } from '../models/layers.js';
import type { Dataset } from './dataset.js';

export { subset, type Dataset } from './dataset.js';

/** 1 label byte followed by the R, G and B planes (32x32 row-major each). */
export const RECORD_BYTES = 1 + IMAGE_BYTES;
export const TRAIN_FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'] as const;
export const TEST_FILE = 'test_batch.bin';
export const CIFAR_FILES = [...TRAIN_FILES, TEST_FILE] as const;
export const DEFAULT_DATA_DIR = './data/cifar-10-batches-bin';

/** CIFAR-10 label -> Flock class; labels not listed are dropped. */
const CLASS_OF_LABEL: ReadonlyMap<number, number> = new Map([[0, 0], [2, 1]]);
const CIFAR_LABELS = 10;
const PLANE = IMAGE_SIZE * IMAGE_SIZE;

/** --data-dir flag, else FLOCK_DATA_DIR, else ./data/cifar-10-batches-bin (empty strings count as unset). */
export function resolveDataDir(flag: string | undefined, env: string | undefined): string {
  if (flag !== undefined && flag !== '') return flag;
  if (env !== undefined && env !== '') return env;
  return DEFAULT_DATA_DIR;
}

function missing(dir: string, path: string, cause: unknown): FlockError {
  return new FlockError(
    ErrorCode.DATA_MISSING,
    `CIFAR-10 data not found: ${path} (${errorMessage(cause)}). ` +
      `Run \`coordinator fetch-data --dir ${dir}\` to download it, or set --data-dir / FLOCK_DATA_DIR to an existing cifar-10-batches-bin folder.`,
    { cause },
  );
}

function corrupt(dir: string, message: string): FlockError {
  return new FlockError(
    ErrorCode.DATA_CORRUPT,
    `${message}. The CIFAR-10 copy in ${dir} is damaged: delete the folder and run \`coordinator fetch-data --dir ${dir}\` again.`,
  );
}

/** Checks the size of one batch file's bytes; returns its record count. */
function recordCount(dir: string, file: string, size: number): number {
  const whole = Math.floor(size / RECORD_BYTES);
  const rest = size % RECORD_BYTES;
  if (rest !== 0) {
    throw corrupt(dir, `${file} is ${size} bytes, not a multiple of ${RECORD_BYTES}: record ${whole} is partial (${rest} of ${RECORD_BYTES} bytes)`);
  }
  // An empty file is what an interrupted copy leaves behind, never a real batch.
  if (whole === 0) throw corrupt(dir, `${file} is empty (0 records)`);
  return whole;
}

/** Number of records of `bytes` with a kept label; also validates every label. */
function keptCount(dir: string, file: string, bytes: Uint8Array, records: number): number {
  let kept = 0;
  for (let r = 0; r < records; r++) {
    const label = bytes[r * RECORD_BYTES]!;
    if (label >= CIFAR_LABELS) throw corrupt(dir, `${file} record ${r} has label ${label}, but CIFAR-10 labels are 0..9`);
    if (CLASS_OF_LABEL.has(label)) kept++;
  }
  return kept;
}

/** Copies the kept records of `bytes` to `out` from record slot `at` on, planar -> NHWC. */
function decodeInto(bytes: Uint8Array, records: number, out: { images: Uint8Array; labels: Uint8Array }, at: number): number {
  let k = at;
  for (let r = 0; r < records; r++) {
    const base = r * RECORD_BYTES;
    const cls = CLASS_OF_LABEL.get(bytes[base]!);
    if (cls === undefined) continue;
    out.labels[k] = cls;
    const dst = k * IMAGE_BYTES;
    for (let c = 0; c < IMAGE_CHANNELS; c++) {
      const src = base + 1 + c * PLANE;
      for (let p = 0; p < PLANE; p++) out.images[dst + p * IMAGE_CHANNELS + c] = bytes[src + p]!;
    }
    k++;
  }
  return k;
}

async function readBatch(dir: string, file: string): Promise<{ file: string; bytes: Uint8Array; records: number; kept: number }> {
  const path = join(dir, file);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw missing(dir, path, err);
  }
  const records = recordCount(dir, file, bytes.length);
  return { file, bytes, records, kept: keptCount(dir, file, bytes, records) };
}

/** Reads and concatenates the kept records of `files` (validated before anything is allocated). */
async function readSplit(dir: string, files: readonly string[]): Promise<Dataset> {
  const batches = await Promise.all(files.map((f) => readBatch(dir, f)));
  const count = batches.reduce((n, b) => n + b.kept, 0);
  const out = { images: new Uint8Array(count * IMAGE_BYTES), labels: new Uint8Array(count) };
  let at = 0;
  for (const b of batches) at = decodeInto(b.bytes, b.records, out, at);
  return { ...out, count };
}

/** Loads airplane/bird train (data_batch_1..5) and validation (test_batch) sets from `dir`. */
export async function loadCifar(dir: string): Promise<{ train: Dataset; validation: Dataset }> {
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw missing(dir, dir, err);
  }
  const train = await readSplit(dir, TRAIN_FILES);
  const validation = await readSplit(dir, [TEST_FILE]);
  return { train, validation };
}

/** Pixels scaled to [0, 1], NHWC float32. */
export function toFloat32(ds: Dataset): Float32Array {
  const n = ds.count * IMAGE_BYTES;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ds.images[i]! / 255;
  return out;
}

/** sha256 (hex) of labels then images: workers with a local copy compare it with the coordinator's. */
export function datasetHash(ds: Dataset): string {
  return createHash('sha256')
    .update(ds.labels.subarray(0, ds.count))
    .update(ds.images.subarray(0, ds.count * IMAGE_BYTES))
    .digest('hex');
}

