// Conv2DBackpropFilter: missing from tfjs-backend-wasm (tfjs#8474). The models' case
// (stride 1, dilation 1, out channels a multiple of 8) runs in WebAssembly SIMD straight
// from x and dy (wasm-src, `conv2dFilterGrad`): no unfolded copy, and no matrix product whose
// 4-5 MB right operand XNNPACK would pack anew on every call. Otherwise the gradient is
// one matrix product, dW[k, o] = Σ_m colT[k, m] · dy[m, o], where k runs over (kh, kw, in),
// m over (batch, outY, outX) and colT is the input unfolded ("im2col", transposed). colT is
// built in plain JS straight from the input's memory; the product runs on the backend's
// BatchMatMul without transposes, which tfjs-backend-wasm hands to XNNPACK (its transposed
// variants use a slow scalar loop). The result's layout [k, o] is already [kh, kw, in, out].
// Any stride, dilation and padding work (they only change which input pixel lands in colT).
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { callKernel, floatMemory, type FloatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

type Conv2DInfo = ReturnType<Tf['backend_util']['computeConv2DInfo']>;

export function conv2DBackpropFilterKernel(tf: Tf, backendName: KernelBackendName, flock?: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend, attrs }: KernelArgs): TensorInfo => {
    const { x, dy } = inputs as unknown as { x: TensorInfo; dy: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tfjs.Conv2DBackpropFilterAttrs;
    if (x.dtype !== 'float32' || dy.dtype !== 'float32') throw new Error('Conv2DBackpropFilter: float32 tensors only');
    if (dataFormat === 'NCHW') throw new Error("Conv2DBackpropFilter: only dataFormat 'NHWC' is supported on this backend");
    const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode);
    const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth, dilationHeight, dilationWidth } = info;
    const padTop = info.padInfo.top;
    const padLeft = info.padInfo.left;
    const k = filterHeight * filterWidth * inChannels;
    const mem = floatMemory(backendName, backend);
    const unit = strideHeight === 1 && strideWidth === 1 && dilationHeight === 1 && dilationWidth === 1;
    if (flock && unit && outChannels % 8 === 0) {
      const out = mem.alloc([filterHeight, filterWidth, inChannels, outChannels]);
      const f = flock(backend);
      f.exports.conv2dFilterGrad(f.ptr(x), f.ptr(dy), f.ptr(out), batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, padTop, padLeft);
      return out;
    }
    if (strideHeight === 1 && strideWidth === 1) {
      return shiftedProduct(tf, backendName, backend, mem, x, dy, info);
    }
    const cols = batchSize * outHeight * outWidth;
    const colT = mem.alloc([1, k, cols]);
    {
      const col = mem.view(colT);
      const src = mem.view(x);
      const rowStride = inWidth * inChannels;
      const imageStride = inHeight * rowStride;
      for (let i = 0; i < filterHeight; i++) {
        for (let j = 0; j < filterWidth; j++) {
          for (let c = 0; c < inChannels; c++) {
            let at = ((i * filterWidth + j) * inChannels + c) * cols;
            for (let b = 0; b < batchSize; b++) {
              for (let oy = 0; oy < outHeight; oy++) {
                const iy = oy * strideHeight + i * dilationHeight - padTop;
                if (iy < 0 || iy >= inHeight) {
                  col.fill(0, at, at + outWidth);
                  at += outWidth;
                  continue;
                }
                const rowBase = b * imageStride + iy * rowStride + c;
                let ix = j * dilationWidth - padLeft;
                for (let ox = 0; ox < outWidth; ox++, ix += strideWidth) {
                  col[at++] = ix >= 0 && ix < inWidth ? src[rowBase + ix * inChannels]! : 0;
                }
              }
            }
          }
        }
      }
    }
    const dy3 = { dataId: dy.dataId, shape: [1, cols, outChannels], dtype: dy.dtype };
    const product = callKernel(tf, tf.BatchMatMul, backendName, { inputs: { a: colT, b: dy3 }, backend, attrs: { transposeA: false, transposeB: false } });
    mem.dispose(colT);
    return { dataId: product.dataId, shape: [filterHeight, filterWidth, inChannels, outChannels], dtype: 'float32' };
  };
  return { kernelName: tf.Conv2DBackpropFilter, backendName, kernelFunc };
}

/**
 * Stride 1: lay the zero-padded input out channel-major, xp[c, b, py, px], so that
 * filter tap (i, j) reads it at the constant offset i·dh·Wp + j·dw from output position
 * (b, oy, ox) when the output grid is embedded in the padded one (dy padded with zeros to
 * [N, Hp, Wp, out]). Every row of colT is then ONE contiguous copy of a channel of xp
 * (memcpy speed instead of a gather per element). Products that fall on dy's zero padding
 * contribute nothing.
 */
function shiftedProduct(tf: Tf, backendName: KernelBackendName, backend: KernelArgs['backend'], mem: FloatMemory, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, dilationHeight, dilationWidth } = info;
  const { top, bottom, left, right } = info.padInfo;
  const hp = inHeight + top + bottom;
  const wp = inWidth + left + right;
  const plane = hp * wp;
  const q = batchSize * plane;
  const maxOffset = (filterHeight - 1) * dilationHeight * wp + (filterWidth - 1) * dilationWidth;
  const channelLength = q + maxOffset;
  const k = filterHeight * filterWidth * inChannels;
  const padded = mem.alloc([inChannels, channelLength]);
  const colT = mem.alloc([1, k, q]);
  const dyPadded = mem.alloc([1, q, outChannels]);
  {
    // Views only after the last allocation (a growing wasm heap detaches older views).
    const xp = mem.view(padded);
    const src = mem.view(x);
    xp.fill(0);
    let at = 0;
    for (let b = 0; b < batchSize; b++) {
      for (let y = 0; y < inHeight; y++) {
        const rowStart = b * plane + (y + top) * wp + left;
        for (let px = rowStart; px < rowStart + inWidth; px++) {
          for (let c = 0; c < inChannels; c++) xp[c * channelLength + px] = src[at++]!;
        }
      }
    }
    const col = mem.view(colT);
    for (let i = 0; i < filterHeight; i++) {
      for (let j = 0; j < filterWidth; j++) {
        const offset = i * dilationHeight * wp + j * dilationWidth;
        for (let c = 0; c < inChannels; c++) {
          const from = c * channelLength + offset;
          col.set(xp.subarray(from, from + q), ((i * filterWidth + j) * inChannels + c) * q);
        }
      }
    }
    const g = mem.view(dy);
    const gp = mem.view(dyPadded);
    gp.fill(0);
    const run = outWidth * outChannels;
    for (let b = 0; b < batchSize; b++) {
      for (let oy = 0; oy < outHeight; oy++) {
        const from = ((b * outHeight + oy) * outWidth) * outChannels;
        gp.set(g.subarray(from, from + run), (b * plane + oy * wp) * outChannels);
      }
    }
  }
  mem.dispose(padded);
  const product = callKernel(tf, tf.BatchMatMul, backendName, { inputs: { a: colT, b: dyPadded }, backend, attrs: { transposeA: false, transposeB: false } });
  mem.dispose(colT);
  mem.dispose(dyPadded);
  return { dataId: product.dataId, shape: [filterHeight, filterWidth, inChannels, outChannels], dtype: 'float32' };
}
