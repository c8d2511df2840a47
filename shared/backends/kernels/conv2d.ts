// Conv2D: tfjs-backend-wasm runs it on XNNPACK (about 24 GFLOP/s here), creating and caching
// an operator per filter tensor: training brings new weights every step, and the input
// gradient a new flipped filter every call. The models' case (stride 1, dilation 1, NHWC,
// out channels a multiple of 8, and 4+ input or 32+ output channels) runs in WebAssembly SIMD (wasm-src, `conv2dForward`, four
// output pixels × 8 channels in registers, about 35 GFLOP/s here); anything else goes to the
// backend's own kernel.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

export function conv2DKernel(tf: Tf, own: KernelConfig, flock: (backend: unknown) => FlockWasm): KernelConfig {
  const inner = own.kernelFunc;
  const kernelFunc = (args: KernelArgs): TensorInfo | TensorInfo[] => {
    const { inputs, backend, attrs } = args;
    const { x, filter } = inputs as unknown as { x: TensorInfo; filter: TensorInfo };
    const { strides, pad, dataFormat, dilations, dimRoundingMode } = attrs as unknown as tfjs.Conv2DAttrs;
    if (x.dtype !== 'float32' || filter.dtype !== 'float32' || dataFormat === 'NCHW' || x.shape.length !== 4) return inner(args);
    const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filter.shape as [number, number, number, number],
      strides, dilations, pad, dimRoundingMode);
    const unit = info.strideHeight === 1 && info.strideWidth === 1 && info.dilationHeight === 1 && info.dilationWidth === 1;
    // Measured here: with 3 input channels and 16 outputs XNNPACK is faster (short inner loops).
    const worthIt = info.inChannels >= 4 || info.outChannels >= 32;
    if (!unit || info.outChannels % 8 !== 0 || !worthIt) return inner(args);
    const out = floatMemory('wasm', backend).alloc(info.outShape);
    const f = flock(backend);
    f.exports.conv2dForward(f.ptr(x), f.ptr(filter), f.ptr(out), info.batchSize, info.inHeight, info.inWidth, info.inChannels,
      info.outHeight, info.outWidth, info.outChannels, info.filterHeight, info.filterWidth, info.padInfo.top, info.padInfo.left);
    return out;
  };
  // The backend's setup (binding its wasm function) must still run when the backend starts.
  return { kernelName: tf.Conv2D, backendName: 'wasm', kernelFunc, ...(own.setupFunc ? { setupFunc: own.setupFunc } : {}) };
}
