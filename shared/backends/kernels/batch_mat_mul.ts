// BatchMatMul: tfjs-backend-wasm hands a product to XNNPACK only without transposes; with
// transposeA or transposeB it runs a scalar loop ~10x slower. The backward pass of every
// dense layer asks for exactly those (dy·Wᵀ, xᵀ·dy), so this wraps the backend's kernel:
// transpose the operand explicitly (a cheap copy), then multiply without transposes.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import { callKernel, floatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

export function batchMatMulKernel(tf: Tf, backendName: KernelBackendName, own: KernelConfig): KernelConfig {
  const inner = own.kernelFunc;
  const transposed = (t: TensorInfo, backend: KernelArgs['backend']): TensorInfo => {
    const rank = t.shape.length;
    const perm = [...Array(rank).keys()];
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
    return callKernel(tf, tf.Transpose, backendName, { inputs: { x: t }, backend, attrs: { perm } });
  };
  const kernelFunc = (args: KernelArgs): TensorInfo | TensorInfo[] => {
    const { inputs, backend, attrs } = args;
    const { a, b } = inputs as unknown as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = attrs as unknown as tfjs.BatchMatMulAttrs;
    if ((!transposeA && !transposeB) || a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) {
      return inner(args);
    }
    const a2 = transposeA ? transposed(a, backend) : a;
    const b2 = transposeB ? transposed(b, backend) : b;
    const out = inner({ inputs: { a: a2, b: b2 }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
    const mem = floatMemory(backendName, backend);
    if (a2 !== a) mem.dispose(a2);
    if (b2 !== b) mem.dispose(b2);
    return out;
  };
  // The backend's setup (binding its wasm function) must still run when the backend starts.
  return { kernelName: tf.BatchMatMul, backendName, kernelFunc, ...(own.setupFunc ? { setupFunc: own.setupFunc } : {}) };
}
