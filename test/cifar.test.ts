import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  CIFAR_FILES, DEFAULT_DATA_DIR, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
  datasetHash, loadCifar, resolveDataDir, subset, toFloat32, type Dataset,
} from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { isFlockError } from '../shared/errors.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';

const KEPT: Record<number, number> = { 0: 0, 2: 1 };

/** Labels and planar pixels of the kept records of raw batch files, decoded independently of the loader. */
async function rawKept(dir: string, files: readonly string[]): Promise<{ labels: number[]; records: Uint8Array[] }> {
  const labels: number[] = [];
  const records: Uint8Array[] = [];
  for (const f of files) {
    const bytes = await readFile(join(dir, f));
    for (let at = 0; at < bytes.length; at += RECORD_BYTES) {
      const cls = KEPT[bytes[at]!];
      if (cls === undefined) continue;
      labels.push(cls);
      records.push(bytes.subarray(at + 1, at + RECORD_BYTES));
    }
  }
  return { labels, records };
}

async function rejectsWith(promise: Promise<unknown>, code: string, ...parts: string[]): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isFlockError(err), `expected FlockError, got ${String(err)}`);
    assert.equal(err.code, code);
    for (const p of parts) assert.ok(err.message.includes(p), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
    return true;
  });
}

void describe('loadCifar', () => {
  let root: string;
  let synth: string;
  const copyDir = async (name: string): Promise<string> => {
    const dir = join(root, name);
    await writeSyntheticCifar(dir, { trainPerFile: 24, testCount: 20, seed: 5 });
    return dir;
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'flock-cifar-'));
    synth = join(root, 'synth');
    await writeSyntheticCifar(synth, { trainPerFile: 40, testCount: 30, seed: 3 });
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  void test('synthetic files load with exact counts, class mapping, other labels dropped', async () => {
    const { train, validation } = await loadCifar(synth);
    const rawTrain = await rawKept(synth, TRAIN_FILES);
    const rawVal = await rawKept(synth, [TEST_FILE]);
    // 40 per file: 5 of other labels, 18 airplanes, 17 birds.
    assert.equal(train.count, 5 * 35);
    assert.equal(validation.count, 30 - 3);
    assert.deepEqual([...train.labels], rawTrain.labels);
    assert.deepEqual([...validation.labels], rawVal.labels);
    assert.equal(train.images.length, train.count * IMAGE_BYTES);
    assert.equal(train.labels.filter((l) => l === 0).length, 5 * 18);
    assert.equal(train.labels.filter((l) => l === 1).length, 5 * 17);
    // Every kept image is its raw record, planar -> NHWC.
    rawTrain.records.forEach((planar, k) => {
      for (let p = 0; p < 1024; p += 97) {
        for (let c = 0; c < 3; c++) assert.equal(train.images[k * IMAGE_BYTES + p * 3 + c], planar[c * 1024 + p]);
      }
    });
  });

  void test('writeSyntheticCifar reports the counts and is deterministic in its seed', async () => {
    const a = await writeSyntheticCifar(join(root, 'det-a'), { trainPerFile: 16, testCount: 8, seed: 9 });
    const b = await writeSyntheticCifar(join(root, 'det-b'), { trainPerFile: 16, testCount: 8, seed: 9 });
    const c = await writeSyntheticCifar(join(root, 'det-c'), { trainPerFile: 16, testCount: 8, seed: 10 });
    assert.deepEqual({ train: a.train, validation: a.validation, dropped: a.dropped }, { train: 5 * 14, validation: 7, dropped: 5 * 2 + 1 });
    for (const f of CIFAR_FILES) {
      assert.deepEqual(await readFile(join(a.dir, f)), await readFile(join(b.dir, f)));
      assert.notDeepEqual(await readFile(join(a.dir, f)), await readFile(join(c.dir, f)));
    }
    const loaded = await loadCifar(a.dir);
    assert.equal(loaded.train.count, a.train);
    assert.equal(loaded.validation.count, a.validation);
  });

  void test('hand-made record converts to NHWC pixel-exact', async () => {
    const dir = await copyDir('hand');
    const rec = (label: number, f: (c: number, p: number) => number): Uint8Array => {
      const r = new Uint8Array(RECORD_BYTES);
      r[0] = label;
      for (let c = 0; c < 3; c++) for (let p = 0; p < 1024; p++) r[1 + c * 1024 + p] = f(c, p);
      return r;
    };
    const bird = rec(2, (c, p) => (p * (c + 1) + 7 * c) % 256);
    const frog = rec(6, () => 99);
    const plane = rec(0, (c, p) => (c === 0 ? p % 256 : c === 1 ? 255 - (p % 256) : 128));
    await writeFile(join(dir, TEST_FILE), Buffer.concat([bird, frog, plane]));
    const { validation } = await loadCifar(dir);
    assert.equal(validation.count, 2);
    assert.deepEqual([...validation.labels], [1, 0]);
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const p = y * 32 + x;
        for (let c = 0; c < 3; c++) {
          assert.equal(validation.images[p * 3 + c], (p * (c + 1) + 7 * c) % 256);
          assert.equal(validation.images[IMAGE_BYTES + p * 3 + c], c === 0 ? p % 256 : c === 1 ? 255 - (p % 256) : 128);
        }
      }
    }
    const f = toFloat32(validation);
    assert.equal(f.length, 2 * IMAGE_BYTES);
    assert.equal(f[IMAGE_BYTES + 1], Math.fround(255 / 255));
    assert.equal(f[IMAGE_BYTES + 2], Math.fround(128 / 255));
    assert.equal(f[IMAGE_BYTES], 0);
  });

  void test('truncated file gives ERR_DATA_CORRUPT naming the file and the partial record', async () => {
    const dir = await copyDir('truncated');
    await truncate(join(dir, 'data_batch_3.bin'), 24 * RECORD_BYTES - 100);
    await rejectsWith(loadCifar(dir), 'ERR_DATA_CORRUPT', 'data_batch_3.bin', `${24 * RECORD_BYTES - 100} bytes`, 'record 23', 'fetch-data');
    await truncate(join(dir, 'data_batch_3.bin'), 0);
    await rejectsWith(loadCifar(dir), 'ERR_DATA_CORRUPT', 'data_batch_3.bin', 'empty');
  });

  void test('bad label gives ERR_DATA_CORRUPT naming the file and the record', async () => {
    const dir = await copyDir('badlabel');
    const path = join(dir, 'data_batch_2.bin');
    const bytes = await readFile(path);
    bytes[7 * RECORD_BYTES] = 10;
    await writeFile(path, bytes);
    await rejectsWith(loadCifar(dir), 'ERR_DATA_CORRUPT', 'data_batch_2.bin', 'record 7', 'label 10');
  });

  void test('missing folder or file gives ERR_DATA_MISSING mentioning fetch-data', async () => {
    const gone = join(root, 'nope', 'cifar-10-batches-bin');
    await rejectsWith(loadCifar(gone), 'ERR_DATA_MISSING', gone, `fetch-data --dir ${gone}`, 'FLOCK_DATA_DIR');
    const dir = await copyDir('missingfile');
    await rm(join(dir, TEST_FILE));
    await rejectsWith(loadCifar(dir), 'ERR_DATA_MISSING', join(dir, TEST_FILE), 'fetch-data');
  });

  void test('datasetHash is stable and sensitive to every byte', async () => {
    const a = await loadCifar(synth);
    const b = await loadCifar(synth);
    const h = datasetHash(a.train);
    assert.match(h, /^[0-9a-f]{64}$/);
    assert.equal(datasetHash(b.train), h);
    assert.notEqual(datasetHash(a.validation), h);
    const images = a.train.images.slice();
    images[images.length - 1] = images[images.length - 1]! ^ 1;
    assert.notEqual(datasetHash({ ...a.train, images }), h);
    const labels = a.train.labels.slice();
    labels[0] = labels[0]! ^ 1;
    assert.notEqual(datasetHash({ ...a.train, labels }), h);
  });

  void test('subset gathers exact records in the given order', async () => {
    const { train } = await loadCifar(synth);
    const idx = [5, 0, train.count - 1, 5];
    const s: Dataset = subset(train, Uint32Array.from(idx));
    assert.equal(s.count, 4);
    idx.forEach((i, k) => {
      assert.equal(s.labels[k], train.labels[i]);
      assert.deepEqual(s.images.subarray(k * IMAGE_BYTES, (k + 1) * IMAGE_BYTES), train.images.subarray(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES));
    });
    const all = subset(train, Array.from({ length: train.count }, (_, i) => i));
    assert.equal(datasetHash(all), datasetHash(train));
    assert.throws(() => subset(train, [train.count]), (err: unknown) => isFlockError(err, 'ERR_BAD_OPTION'));
  });
});

void test('resolveDataDir: flag, else env, else default', () => {
  assert.equal(resolveDataDir('/a', '/b'), '/a');
  assert.equal(resolveDataDir(undefined, '/b'), '/b');
  assert.equal(resolveDataDir('', '/b'), '/b');
  assert.equal(resolveDataDir(undefined, undefined), DEFAULT_DATA_DIR);
  assert.equal(DEFAULT_DATA_DIR, './data/cifar-10-batches-bin');
});
