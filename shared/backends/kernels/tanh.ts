// Tanh: tfjs-backend-wasm's kernel calls libm's scalar tanh (about 10 ns per element, the
// slowest kernel of a training step). Flock's runs in WebAssembly SIMD (wasm-src, `tanh`):
// double precision from a table of tanh(j/64) and the addition theorem, tanh(a + r) =
// (tanh a + tanh r) / (1 + tanh a · tanh r), with a = x truncated to a multiple of 1/64
// and a short odd series for tanh r. Rounded to float32 it equals Math.tanh (what the cpu
// backend and PyTorch's libm compute), including saturation to exactly ±1 from |x| ≈ 8.7
// on; NaN stays NaN and −0 stays −0. No data-dependent branches.
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

export function tanhKernel(tf: Tf, flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { x } = inputs as unknown as { x: TensorInfo };
    if (x.dtype !== 'float32') throw new Error('Tanh: float32 tensors only');
    const out = floatMemory('wasm', backend).alloc([...x.shape]);
    const f = flock(backend);
    f.exports.tanh(f.ptr(x), f.ptr(out), x.shape.reduce((a, b) => a * b, 1), f.tanhTable);
    return out;
  };
  return { kernelName: tf.Tanh, backendName: 'wasm', kernelFunc };
}

/**
 * FlockBiasTanh: tanh(x + bias) over the last axis, one pass instead of Add then Tanh (the
 * float32 sum is rounded first, so the result is bit-identical to the two kernels).
 */
export const FLOCK_BIAS_TANH = 'FlockBiasTanh';

export function biasTanhKernel(flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { x, bias } = inputs as unknown as { x: TensorInfo; bias: TensorInfo };
    const c = x.shape[x.shape.length - 1] ?? 0;
    if (x.dtype !== 'float32' || bias.dtype !== 'float32') throw new Error('FlockBiasTanh: float32 tensors only');
    if (bias.shape.length !== 1 || bias.shape[0] !== c) throw new Error('FlockBiasTanh: bias must be [channels]');
    const out = floatMemory('wasm', backend).alloc([...x.shape]);
    const f = flock(backend);
    f.exports.biasTanh(f.ptr(x), f.ptr(bias), f.ptr(out), x.shape.reduce((a, b) => a * b, 1) / c, c, f.tanhTable);
    return out;
  };
  return { kernelName: FLOCK_BIAS_TANH, backendName: 'wasm', kernelFunc };
}
