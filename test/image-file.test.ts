import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PNG } from 'pngjs';
import { GRID_COLORS, gridSize, readImagePng, writeImageGridPng } from '../shared/data/image-file.js';
import { isFlockError } from '../shared/errors.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';

/** A 32x32 NHWC image whose every byte differs from its neighbours. */
function pattern(seed: number): Uint8Array {
  const img = new Uint8Array(IMAGE_BYTES);
  for (let i = 0; i < IMAGE_BYTES; i++) img[i] = (i * 7 + seed * 31) % 256;
  return img;
}

function writePng(path: string, width: number, height: number, pixel: (x: number, y: number) => [number, number, number, number]): void {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) png.data.set(pixel(x, y), (y * width + x) * 4);
  }
  writeFileSync(path, PNG.sync.write(png));
}

void describe('image files', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flock-image-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  void test('a 32x32 image round-trips exactly through a grid of one without border', () => {
    const img = pattern(1);
    const path = join(dir, 'one.png');
    assert.deepEqual(writeImageGridPng(path, img, 1, { scale: 1, border: 0, gap: 0 }), { width: 32, height: 32 });
    assert.deepEqual(readImagePng(path), img);
  });

  void test('grey and transparent PNGs become RGB; transparency over white', () => {
    const grey = join(dir, 'grey.png');
    const png = new PNG({ width: 32, height: 32, colorType: 0, inputColorType: 0, bitDepth: 8 });
    for (let i = 0; i < 32 * 32; i++) png.data.set([i % 256, i % 256, i % 256, 255], i * 4);
    writeFileSync(grey, PNG.sync.write(png, { colorType: 0, inputColorType: 6 }));
    const g = readImagePng(grey);
    for (const p of [0, 100, 1023]) assert.deepEqual([...g.subarray(p * 3, p * 3 + 3)], [p % 256, p % 256, p % 256]);

    const rgba = join(dir, 'rgba.png');
    writePng(rgba, 32, 32, (x) => (x < 16 ? [0, 0, 0, 0] : [0, 0, 0, 255]));
    const t = readImagePng(rgba);
    assert.deepEqual([...t.subarray(0, 3)], [255, 255, 255]);
    assert.deepEqual([...t.subarray(31 * 3, 32 * 3)], [0, 0, 0]);
  });

  void test('other sizes are resized to 32x32', () => {
    const big = join(dir, 'big.png');
    // Left half red, right half blue, at 64x48: the resized halves keep their colours.
    writePng(big, 64, 48, (x) => (x < 32 ? [255, 0, 0, 255] : [0, 0, 255, 255]));
    const img = readImagePng(big);
    assert.equal(img.length, IMAGE_BYTES);
    assert.deepEqual([...img.subarray(0, 3)], [255, 0, 0]);
    assert.deepEqual([...img.subarray((31 * 32 + 31) * 3, IMAGE_BYTES)], [0, 0, 255]);
    const small = join(dir, 'small.png');
    writePng(small, 2, 2, () => [10, 20, 30, 255]);
    const s = readImagePng(small);
    for (let p = 0; p < 1024; p += 111) assert.deepEqual([...s.subarray(p * 3, p * 3 + 3)], [10, 20, 30]);
  });

  void test('unreadable files give ERR_IMAGE naming the path', () => {
    const bad = join(dir, 'bad.png');
    writeFileSync(bad, 'not a png');
    for (const path of [bad, join(dir, 'absent.png')]) {
      assert.throws(() => readImagePng(path), (err: unknown) => isFlockError(err, 'ERR_IMAGE') && err.message.includes(path));
    }
  });

  void test('grid has the expected dimensions, borders and scaled pixels', () => {
    const count = 5;
    const images = new Uint8Array(count * IMAGE_BYTES);
    for (let i = 0; i < count; i++) images.set(pattern(i), i * IMAGE_BYTES);
    const path = join(dir, 'grid.png');
    const opts = { columns: 3, scale: 3, border: 2, gap: 4 };
    const size = writeImageGridPng(path, images, count, { ...opts, correct: [true, false, true, true, false] });
    const cell = 32 * 3 + 2 * 2;
    assert.deepEqual(size, { width: 3 * cell + 4 * 4, height: 2 * cell + 3 * 4 });
    assert.deepEqual(gridSize(count, opts), { ...size, columns: 3, rows: 2 });
    const png = PNG.sync.read(readFileSync(path));
    assert.equal(png.width, size.width);
    assert.equal(png.height, size.height);
    const at = (x: number, y: number): number[] => [...png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3)];
    assert.deepEqual(at(0, 0), [...GRID_COLORS.background]);
    assert.deepEqual(at(4, 4), [...GRID_COLORS.right]); // image 0's border
    assert.deepEqual(at(4 + cell + 4, 4), [...GRID_COLORS.wrong]); // image 1's border
    // Image 4 (row 1, column 1): its pixel (x=5, y=2) fills a 3x3 block.
    const left = 4 + (cell + 4) + 2;
    const top = 4 + (cell + 4) + 2;
    const want = [...pattern(4).subarray((2 * 32 + 5) * 3, (2 * 32 + 5) * 3 + 3)];
    for (const [dx, dy] of [[0, 0], [2, 2], [1, 2]] as const) assert.deepEqual(at(left + 5 * 3 + dx, top + 2 * 3 + dy), want);
  });
});
