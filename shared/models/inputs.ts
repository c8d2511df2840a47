// Turning stored uint8 images into the network's input, and dropout masks from seeds.
import { Rng, mixSeed } from '../random.js';
import { IMAGE_BYTES, IMAGE_CHANNELS, type Layer } from './layers.js';

/** The recipe's per-channel normalisation (CIFAR-10 mean and std after ToTensor). */
export const CHANNEL_MEAN = [0.4915, 0.4823, 0.4468] as const;
export const CHANNEL_STD = [0.247, 0.2435, 0.2616] as const;

/** 256 precomputed values per channel: (v / 255 - mean) / std, computed in float32 as ToTensor + Normalize do. */
function buildTable(): Float32Array {
  const table = new Float32Array(256 * IMAGE_CHANNELS);
  for (let c = 0; c < IMAGE_CHANNELS; c++) {
    for (let v = 0; v < 256; v++) {
      const scaled = Math.fround(v / 255);
      table[c * 256 + v] = Math.fround(Math.fround(scaled - CHANNEL_MEAN[c]!) / CHANNEL_STD[c]!);
    }
  }
  return table;
}
const TABLE = buildTable();

/** NHWC uint8 pixels -> normalised NHWC float32. */
export function normalizeImages(pixels: Uint8Array, count: number): Float32Array {
  const n = count * IMAGE_BYTES;
  if (pixels.length < n) throw new RangeError(`normalizeImages: ${pixels.length} bytes for ${count} images`);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 3) {
    out[i] = TABLE[pixels[i]!]!;
    out[i + 1] = TABLE[256 + pixels[i + 1]!]!;
    out[i + 2] = TABLE[512 + pixels[i + 2]!]!;
  }
  return out;
}

/** Channel count entering each dropout layer, in layer order. */
export function dropoutChannels(layers: readonly Layer[]): number[] {
  const out: number[] = [];
  let channels = IMAGE_CHANNELS;
  for (const layer of layers) {
    if (layer.kind === 'conv2d') channels = layer.outChannels;
    else if (layer.kind === 'dense') channels = layer.units;
    else if (layer.kind === 'dropout2d') out.push(channels);
  }
  return out;
}

/**
 * Dropout2d masks ([N, 1, 1, C], values 0 or 1/(1-p)) for one micro-batch. The seed is
 * derived from (run seed, step, micro-batch), so the same samples get the same masks on
 * whichever worker computes them.
 */
export function dropoutMasks(layers: readonly Layer[], count: number, seed: number): Float32Array[] {
  const rates = layers.filter((l): l is Extract<Layer, { kind: 'dropout2d' }> => l.kind === 'dropout2d').map((l) => l.rate);
  const channels = dropoutChannels(layers);
  return rates.map((rate, k) => {
    const c = channels[k]!;
    const rng = new Rng(mixSeed(seed, k));
    const keep = 1 / (1 - rate);
    const mask = new Float32Array(count * c);
    for (let i = 0; i < mask.length; i++) mask[i] = rng.next() < rate ? 0 : keep;
    return mask;
  });
}
