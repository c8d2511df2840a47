// Registers Flock's training kernels on a TensorFlow.js backend (see the files beside this one).
// Idempotent: registering again (or for a second backend in the same process) is harmless.
import type { Tf } from '../../backend.js';
import { conv2DBackpropFilterKernel } from './conv2d_backprop_filter.js';
import { conv2DBackpropInputKernel } from './conv2d_backprop_input.js';
import { maxPoolGradKernel } from './max_pool_grad.js';
import { tanhKernel } from './tanh.js';
import { tanhGradient, tanhGradKernel } from './tanh_grad.js';
import { registerGradientOnce, registerKernelOnce } from './util.js';

export function registerTrainingKernels(tf: Tf, backend: 'wasm' | 'cpu'): void {
  // Gradients are global in tfjs; this one falls back to tfjs's formula on backends
  // without Flock's TanhGrad kernel, so it is safe to register for all of them.
  registerGradientOnce(tf, tanhGradient(tf));
  // The cpu backend's own kernels are correct (if slow) and serve as the tests' reference.
  if (backend !== 'wasm') return;
  registerKernelOnce(tf, conv2DBackpropFilterKernel(tf, backend));
  registerKernelOnce(tf, conv2DBackpropInputKernel(tf, backend));
  registerKernelOnce(tf, maxPoolGradKernel(tf, backend));
  registerKernelOnce(tf, tanhKernel(tf, backend));
  registerKernelOnce(tf, tanhGradKernel(tf, backend));
}
