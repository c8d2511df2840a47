// Tanh's gradient, dx = dy · (1 − y²), as one pass instead of tfjs's three kernels
// (Square, Sub, Multiply) and their two temporaries. tfjs has no TanhGrad kernel, so this
// registers one under Flock's own name and replaces the (backend-independent) Tanh
// gradient with one that uses it where it is registered and tfjs's formula elsewhere.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import { floatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

export const TANH_GRAD = 'FlockTanhGrad';

export function tanhGradKernel(tf: Tf, backendName: KernelBackendName): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { dy, y } = inputs as unknown as { dy: TensorInfo; y: TensorInfo };
    if (dy.dtype !== 'float32' || y.dtype !== 'float32') throw new Error(`${TANH_GRAD}: float32 tensors only`);
    const mem = floatMemory(backendName, backend);
    const out = mem.alloc([...y.shape]);
    const g = mem.view(dy);
    const v = mem.view(y);
    const dx = mem.view(out);
    for (let i = 0; i < dx.length; i++) {
      const t = v[i]!;
      dx[i] = g[i]! * (1 - t * t);
    }
    return out;
  };
  return { kernelName: TANH_GRAD, backendName, kernelFunc };
}

export function tanhGradient(tf: Tf): tfjs.GradConfig {
  return {
    kernelName: tf.Tanh,
    outputsToSave: [true],
    gradFunc: (dy: tfjs.Tensor | tfjs.Tensor[], saved: tfjs.Tensor[]) => {
      const [y] = saved as [tfjs.Tensor];
      const g = dy as tfjs.Tensor;
      return {
        x: () => tf.getKernel(TANH_GRAD, tf.getBackend()) && g.dtype === 'float32' && g.size === y.size
          ? tf.engine().runKernel<tfjs.Tensor>(TANH_GRAD, { dy: g, y })
          : tf.mul(g, tf.sub(tf.scalar(1), tf.square(y))),
      };
    },
  };
}
