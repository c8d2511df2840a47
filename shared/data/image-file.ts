// PNG in and out: a user's image as a network input, and a grid of classified images
// with a green (right) or red (wrong) border each, for a quick visual check.
import { readFileSync, writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { IMAGE_BYTES, IMAGE_CHANNELS, IMAGE_SIZE } from '../models/layers.js';

type Rgb = readonly [number, number, number];

export const GRID_COLORS = { right: [40, 200, 60], wrong: [220, 40, 40], neutral: [128, 128, 128], background: [24, 24, 24] } as const;

/** Bilinear resize of an RGB image (half-pixel centres, as tf.image.resizeBilinear with halfPixelCenters). */
function resizeBilinear(src: Float32Array, w: number, h: number, size: number): Float32Array {
  const out = new Float32Array(size * size * IMAGE_CHANNELS);
  const sample = (pos: number, scale: number, n: number): [number, number, number] => {
    const f = Math.min(n - 1, Math.max(0, (pos + 0.5) * scale - 0.5));
    const i0 = Math.floor(f);
    return [i0, Math.min(n - 1, i0 + 1), f - i0];
  };
  for (let y = 0; y < size; y++) {
    const [y0, y1, fy] = sample(y, h / size, h);
    for (let x = 0; x < size; x++) {
      const [x0, x1, fx] = sample(x, w / size, w);
      for (let c = 0; c < IMAGE_CHANNELS; c++) {
        const at = (yy: number, xx: number): number => src[(yy * w + xx) * IMAGE_CHANNELS + c]!;
        const top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx;
        const bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx;
        out[(y * size + x) * IMAGE_CHANNELS + c] = top * (1 - fy) + bottom * fy;
      }
    }
  }
  return out;
}

/**
 * Reads a PNG as 32x32 NHWC RGB bytes. pngjs expands grey, palette and 16-bit images to
 * 8-bit RGBA; transparency is composited over white, as image viewers show it.
 */
export function readImagePng(path: string): Uint8Array {
  let png: PNG;
  try {
    png = PNG.sync.read(readFileSync(path));
  } catch (err) {
    throw new FlockError(ErrorCode.IMAGE, `cannot read image ${path} (${errorMessage(err)}); give a PNG file, ideally 32x32 RGB.`, { cause: err });
  }
  const { width: w, height: h, data } = png;
  const rgb = new Float32Array(w * h * IMAGE_CHANNELS);
  for (let p = 0; p < w * h; p++) {
    const alpha = data[p * 4 + 3]! / 255;
    for (let c = 0; c < IMAGE_CHANNELS; c++) rgb[p * IMAGE_CHANNELS + c] = data[p * 4 + c]! * alpha + 255 * (1 - alpha);
  }
  const sized = w === IMAGE_SIZE && h === IMAGE_SIZE ? rgb : resizeBilinear(rgb, w, h, IMAGE_SIZE);
  const out = new Uint8Array(IMAGE_BYTES);
  for (let i = 0; i < IMAGE_BYTES; i++) out[i] = Math.max(0, Math.min(255, Math.round(sized[i]!)));
  return out;
}

export interface GridOptions {
  /** Per image: true = green border, false = red; takes precedence over `colors`. */
  readonly correct?: ArrayLike<boolean>;
  /** Per image border colour, RGB 0..255. */
  readonly colors?: readonly Rgb[];
  readonly columns: number;
  /** Upscaling factor (nearest neighbour). */
  readonly scale: number;
  /** Border width in output pixels. */
  readonly border: number;
  /** Background gap between and around cells. */
  readonly gap: number;
}

const GRID_DEFAULTS: GridOptions = { columns: 8, scale: 3, border: 3, gap: 4 };

/** Pixel size of the grid `writeImageGridPng` draws for `count` images. */
export function gridSize(count: number, opts: Partial<GridOptions> = {}): { width: number; height: number; columns: number; rows: number } {
  const o = { ...GRID_DEFAULTS, ...opts };
  const columns = Math.max(1, Math.min(o.columns, count));
  const rows = Math.max(1, Math.ceil(count / columns));
  const cell = IMAGE_SIZE * o.scale + 2 * o.border;
  return { width: columns * cell + (columns + 1) * o.gap, height: rows * cell + (rows + 1) * o.gap, columns, rows };
}

function borderColor(i: number, o: Partial<GridOptions>): Rgb {
  const right = o.correct?.[i];
  if (right !== undefined) return right ? GRID_COLORS.right : GRID_COLORS.wrong;
  return o.colors?.[i] ?? GRID_COLORS.neutral;
}

/** Writes `count` NHWC images (IMAGE_BYTES each) as a PNG grid, row by row; returns its size. */
export function writeImageGridPng(path: string, images: Uint8Array, count: number, opts: Partial<GridOptions> = {}): { width: number; height: number } {
  if (images.length < count * IMAGE_BYTES) {
    throw new FlockError(ErrorCode.IMAGE, `writeImageGridPng: ${images.length} bytes cannot hold ${count} images of ${IMAGE_BYTES} bytes.`);
  }
  const o = { ...GRID_DEFAULTS, ...opts };
  const { width, height, columns } = gridSize(count, o);
  const png = new PNG({ width, height });
  const put = (x: number, y: number, r: number, g: number, b: number): void => {
    const at = (y * width + x) * 4;
    png.data[at] = r;
    png.data[at + 1] = g;
    png.data[at + 2] = b;
    png.data[at + 3] = 255;
  };
  const [br, bg, bb] = GRID_COLORS.background;
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) put(x, y, br, bg, bb);
  const cell = IMAGE_SIZE * o.scale + 2 * o.border;
  for (let i = 0; i < count; i++) {
    const left = o.gap + (i % columns) * (cell + o.gap);
    const top = o.gap + Math.floor(i / columns) * (cell + o.gap);
    const [r, g, b] = borderColor(i, opts);
    for (let y = 0; y < cell; y++) for (let x = 0; x < cell; x++) put(left + x, top + y, r, g, b);
    const src = i * IMAGE_BYTES;
    for (let y = 0; y < IMAGE_SIZE * o.scale; y++) {
      for (let x = 0; x < IMAGE_SIZE * o.scale; x++) {
        const p = src + (Math.floor(y / o.scale) * IMAGE_SIZE + Math.floor(x / o.scale)) * IMAGE_CHANNELS;
        put(left + o.border + x, top + o.border + y, images[p]!, images[p + 1]!, images[p + 2]!);
      }
    }
  }
  try {
    writeFileSync(path, PNG.sync.write(png));
  } catch (err) {
    throw new FlockError(ErrorCode.IMAGE, `cannot write image grid ${path} (${errorMessage(err)}); check that the folder exists and is writable.`, { cause: err });
  }
  return { width, height };
}
