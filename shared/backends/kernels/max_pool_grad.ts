// MaxPoolGrad: tfjs-backend-wasm's kernel mixes up channels when there is more than one,
// so this replaces it. Each window's gradient goes to the FIRST maximum in row-major
// window order, as PyTorch's max_pool2d does (tanh saturates to exactly ±1, so ties are
// common); NaN counts as a maximum, as in PyTorch. Works for any filter, stride and padding
// (dilation 1, which is all MaxPool supports), as one pass over the input in plain JS.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import { floatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

export function maxPoolGradKernel(tf: Tf, backendName: KernelBackendName): KernelConfig {
  const kernelFunc = ({ inputs, backend, attrs }: KernelArgs): TensorInfo => {
    const { dy, input } = inputs as unknown as { dy: TensorInfo; input: TensorInfo };
    const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tfjs.MaxPoolGradAttrs;
    if (dy.dtype !== 'float32' || input.dtype !== 'float32') throw new Error('MaxPoolGrad: float32 tensors only');
    const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
    const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth } = info;
    const padTop = info.padInfo.top;
    const padLeft = info.padInfo.left;
    const mem = floatMemory(backendName, backend);
    const out = mem.alloc([...input.shape]);
    // Views only after the last allocation (a growing wasm heap detaches older views).
    const dx = mem.view(out);
    const x = mem.view(input);
    const g = mem.view(dy);
    const rowStride = inWidth * channels;
    if (filterHeight === 2 && filterWidth === 2 && strideHeight === 2 && strideWidth === 2 && padTop === 0 && padLeft === 0) {
      pool2x2(dx, x, g, batchSize, inHeight, inWidth, channels, outHeight, outWidth);
      return out;
    }
    dx.fill(0);
    for (let b = 0; b < batchSize; b++) {
      const xBase = b * inHeight * rowStride;
      const dyBase = b * outHeight * outWidth * channels;
      for (let oy = 0; oy < outHeight; oy++) {
        const y0 = oy * strideHeight - padTop;
        const yStart = Math.max(0, y0);
        const yEnd = Math.min(inHeight, y0 + filterHeight);
        for (let ox = 0; ox < outWidth; ox++) {
          const x0 = ox * strideWidth - padLeft;
          const xStart = Math.max(0, x0);
          const xEnd = Math.min(inWidth, x0 + filterWidth);
          const dyAt = dyBase + (oy * outWidth + ox) * channels;
          if (yStart >= yEnd || xStart >= xEnd) continue;
          const first = xBase + yStart * rowStride + xStart * channels;
          for (let c = 0; c < channels; c++) {
            let best = first + c;
            let bestValue = -Infinity;
            for (let iy = yStart; iy < yEnd; iy++) {
              for (let ix = xStart; ix < xEnd; ix++) {
                const at = xBase + iy * rowStride + ix * channels + c;
                const v = x[at]!;
                if (v > bestValue || Number.isNaN(v)) { bestValue = v; best = at; }
              }
            }
            dx[best] = dx[best]! + g[dyAt + c]!;
          }
        }
      }
    }
    return out;
  };
  return { kernelName: tf.MaxPoolGrad, backendName, kernelFunc };
}

/**
 * The 2x2 stride-2 case of the models, without the general loop's bookkeeping: every
 * window writes all four of its gradient cells (zero except at the first maximum).
 */
function pool2x2(dx: Float32Array, x: Float32Array, g: Float32Array, batchSize: number, inHeight: number, inWidth: number, channels: number, outHeight: number, outWidth: number): void {
  if (inHeight !== 2 * outHeight || inWidth !== 2 * outWidth) dx.fill(0); // odd sizes: cells no window covers
  const rowStride = inWidth * channels;
  let gAt = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        const p00 = (b * inHeight + 2 * oy) * rowStride + 2 * ox * channels;
        for (let c = 0; c < channels; c++, gAt++) {
          const a = p00 + c;
          const bb = a + channels;
          const cc = a + rowStride;
          const dd = cc + channels;
          const va = x[a]!;
          const vb = x[bb]!;
          const vc = x[cc]!;
          const vd = x[dd]!;
          // first maximum in the order a, b, c, d; a NaN wins (as in PyTorch: the last NaN)
          let k = 0;
          let m = va;
          if (vb > m || vb !== vb) { k = 1; m = vb; }
          if (vc > m || vc !== vc) { k = 2; m = vc; }
          if (vd > m || vd !== vd) k = 3;
          const v = g[gAt]!;
          dx[a] = k === 0 ? v : 0;
          dx[bb] = k === 1 ? v : 0;
          dx[cc] = k === 2 ? v : 0;
          dx[dd] = k === 3 ? v : 0;
        }
      }
    }
  }
}
