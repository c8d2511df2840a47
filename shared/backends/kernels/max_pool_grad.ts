// MaxPoolGrad: tfjs-backend-wasm's kernel mixes up channels when there is more than one,
// so this replaces it. Each window's gradient goes to the FIRST maximum in row-major
// window order, as PyTorch's max_pool2d does (tanh saturates to exactly ±1, so ties are
// common); NaN counts as a maximum, as in PyTorch. Works for any filter, stride and padding
// (dilation 1, which is all MaxPool supports), as one pass over the input: the models'
// 2x2 stride-2 windows in WebAssembly SIMD on wasm (wasm-src, `maxPoolGrad2x2`, four
// channels at a time with the same comparisons), any other window in plain JS.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

export function maxPoolGradKernel(tf: Tf, flock: (backend: unknown) => FlockWasm): KernelConfig {
  const backendName = 'wasm';
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
    // Whole windows only: 'same' padding of an odd size has a partial last window (general path).
    const twoByTwo = filterHeight === 2 && filterWidth === 2 && strideHeight === 2 && strideWidth === 2 && padTop === 0 && padLeft === 0 &&
      2 * outHeight <= inHeight && 2 * outWidth <= inWidth;
    if (twoByTwo) {
      const f = flock(backend);
      f.exports.maxPoolGrad2x2(f.ptr(input), f.ptr(dy), f.ptr(out), batchSize, inHeight, inWidth, channels, outHeight, outWidth);
      return out;
    }
    // Views only after the last allocation (a growing wasm heap detaches older views).
    const dx = mem.view(out);
    const x = mem.view(input);
    const g = mem.view(dy);
    const rowStride = inWidth * channels;
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
