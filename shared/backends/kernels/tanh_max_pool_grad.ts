// FlockTanhMaxPoolGrad: the backward pass of tanh followed by a 2x2 stride-2 max pool in one
// WebAssembly SIMD pass (wasm-src, `tanhMaxPoolGrad`): dx = (1 − y²)·(dp routed to each
// window's first maximum), bit-identical to MaxPoolGrad then FlockTanhGrad, which write and
// read back a full-size temporary; and dbias = Σ dx per channel, the gradient of a bias added
// before the tanh. Inputs {y (tanh's output, NHWC), dy (the pool's output gradient)};
// outputs [dx, dbias]. Whole windows only (any 'valid' 2x2 pool).
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

export const FLOCK_TANH_MAX_POOL_GRAD = 'FlockTanhMaxPoolGrad';

export function tanhMaxPoolGradKernel(flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo[] => {
    const { y, dy } = inputs as unknown as { y: TensorInfo; dy: TensorInfo };
    if (y.dtype !== 'float32' || dy.dtype !== 'float32' || y.shape.length !== 4 || dy.shape.length !== 4) {
      throw new Error(`${FLOCK_TANH_MAX_POOL_GRAD}: float32 NHWC tensors only`);
    }
    const [n, h, w, c] = y.shape as [number, number, number, number];
    const [, outH, outW] = dy.shape as [number, number, number, number];
    if (dy.shape[0] !== n || dy.shape[3] !== c || 2 * outH > h || 2 * outW > w) {
      throw new Error(`${FLOCK_TANH_MAX_POOL_GRAD}: dy [${dy.shape.join()}] is not a 2x2 pool of y [${y.shape.join()}]`);
    }
    const mem = floatMemory('wasm', backend);
    const dx = mem.alloc([n, h, w, c]);
    const dbias = mem.alloc([c]);
    const scratch = mem.alloc([6 * c]);
    const f = flock(backend);
    f.exports.tanhMaxPoolGrad(f.ptr(y), f.ptr(dy), f.ptr(dx), n, h, w, c, outH, outW, f.ptr(dbias), f.ptr(scratch));
    mem.dispose(scratch);
    return [dx, dbias];
  };
  return { kernelName: FLOCK_TANH_MAX_POOL_GRAD, backendName: 'wasm', kernelFunc };
}

/** Whether the active backend has FlockTanhMaxPoolGrad (so far only wasm). */
export function hasFlockTanhMaxPoolGrad(tf: Tf): boolean {
  return tf.getKernel(FLOCK_TANH_MAX_POOL_GRAD, tf.getBackend()) !== undefined;
}
