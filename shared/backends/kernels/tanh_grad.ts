// FlockTanhGrad: dx = (1 − y·y) · dy from tanh's output y, in one WebAssembly SIMD pass.
// tfjs's Tanh gradient runs three kernels for it (Square, Sub, Multiply) with two
// full-size temporaries; the float32 operations and their order are the same, so the
// result is bit-identical. A Flock-only kernel name: shared/models/forward.ts uses it where
// the active backend registers it and tfjs's own gradient elsewhere.
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

export const FLOCK_TANH_GRAD = 'FlockTanhGrad';

export function tanhGradKernel(flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { y, dy } = inputs as unknown as { y: TensorInfo; dy: TensorInfo };
    if (y.dtype !== 'float32' || dy.dtype !== 'float32') throw new Error('FlockTanhGrad: float32 tensors only');
    const n = y.shape.reduce((a, b) => a * b, 1);
    if (dy.shape.reduce((a, b) => a * b, 1) !== n) throw new Error('FlockTanhGrad: y and dy differ in size');
    const out = floatMemory('wasm', backend).alloc([...y.shape]);
    const f = flock(backend);
    f.exports.tanhGrad(f.ptr(y), f.ptr(dy), f.ptr(out), n);
    return out;
  };
  return { kernelName: FLOCK_TANH_GRAD, backendName: 'wasm', kernelFunc };
}

/** Whether the active backend has FlockTanhGrad (so far only wasm). */
export function hasFlockTanhGrad(tf: Tf): boolean {
  return tf.getKernel(FLOCK_TANH_GRAD, tf.getBackend()) !== undefined;
}
