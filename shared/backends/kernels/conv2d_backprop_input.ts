// Conv2DBackpropInput: tfjs-backend-wasm has one, but it is a scalar loop several times
// slower than its forward Conv2D (XNNPACK). For stride 1 the input gradient IS a forward
// convolution: of dy with the filter flipped in space and with in/out channels swapped,
// padded by (filter size - 1 - forward padding) on each side. Other strides use a direct
// (slow, correct) loop.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import { callKernel, floatMemory, type FloatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

type Conv2DInfo = ReturnType<Tf['backend_util']['computeConv2DInfo']>;

export function conv2DBackpropInputKernel(tf: Tf, backendName: KernelBackendName): KernelConfig {
  const kernelFunc = ({ inputs, backend, attrs }: KernelArgs): TensorInfo => {
    const { dy, filter } = inputs as unknown as { dy: TensorInfo; filter: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as tfjs.Conv2DBackpropInputAttrs;
    if (dy.dtype !== 'float32' || filter.dtype !== 'float32') throw new Error('Conv2DBackpropInput: float32 tensors only');
    if (dataFormat === 'NCHW') throw new Error("Conv2DBackpropInput: only dataFormat 'NHWC' is supported on this backend");
    const info = tf.backend_util.computeConv2DInfo(inputShape, filter.shape as [number, number, number, number], strides, 1, pad, dimRoundingMode);
    const mem = floatMemory(backendName, backend);
    const { filterHeight: kh, filterWidth: kw, inChannels, outChannels } = info;
    const padTop = kh - 1 - info.padInfo.top;
    const padBottom = kh - 1 - info.padInfo.bottom;
    const padLeft = kw - 1 - info.padInfo.left;
    const padRight = kw - 1 - info.padInfo.right;
    const unitStride = info.strideHeight === 1 && info.strideWidth === 1;
    if (!unitStride || padTop < 0 || padBottom < 0 || padLeft < 0 || padRight < 0) return direct(mem, dy, filter, info);

    // flipped[i, j, o, c] = filter[kh-1-i, kw-1-j, c, o]
    const flipped = mem.alloc([kh, kw, outChannels, inChannels]);
    {
      const f = mem.view(filter);
      const t = mem.view(flipped);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const src = ((kh - 1 - i) * kw + (kw - 1 - j)) * inChannels * outChannels;
          const dst = (i * kw + j) * outChannels * inChannels;
          for (let c = 0; c < inChannels; c++) {
            for (let o = 0; o < outChannels; o++) t[dst + o * inChannels + c] = f[src + c * outChannels + o]!;
          }
        }
      }
    }
    const out = callKernel(tf, tf.Conv2D, backendName, {
      inputs: { x: dy, filter: flipped },
      backend,
      attrs: { strides: [1, 1], pad: [[0, 0], [padTop, padBottom], [padLeft, padRight], [0, 0]], dataFormat: 'NHWC', dilations: [1, 1], dimRoundingMode: undefined } as unknown as tfjs.NamedAttrMap,
    });
    mem.dispose(flipped);
    return out;
  };
  return { kernelName: tf.Conv2DBackpropInput, backendName, kernelFunc };
}

/** dx[b, y, x, c] = Σ dy[b, oy, ox, o] · w[i, j, c, o] over oy·s + i − pad = y (and the same for x). */
function direct(mem: FloatMemory, dy: TensorInfo, filter: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const out = mem.alloc([batchSize, inHeight, inWidth, inChannels]);
  const dx = mem.view(out);
  const g = mem.view(dy);
  const w = mem.view(filter);
  dx.fill(0);
  for (let b = 0; b < batchSize; b++) {
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        const gAt = ((b * outHeight + oy) * outWidth + ox) * outChannels;
        for (let i = 0; i < filterHeight; i++) {
          const y = oy * strideHeight + i - padTop;
          if (y < 0 || y >= inHeight) continue;
          for (let j = 0; j < filterWidth; j++) {
            const x = ox * strideWidth + j - padLeft;
            if (x < 0 || x >= inWidth) continue;
            const dxAt = ((b * inHeight + y) * inWidth + x) * inChannels;
            const wAt = (i * filterWidth + j) * inChannels * outChannels;
            for (let c = 0; c < inChannels; c++) {
              let s = 0;
              for (let o = 0; o < outChannels; o++) s += g[gAt + o]! * w[wAt + c * outChannels + o]!;
              dx[dxAt + c] = dx[dxAt + c]! + s;
            }
          }
        }
      }
    }
  }
  return out;
}
