// Registers Flock's training kernels on a TensorFlow.js backend (see the files beside this one).
// Idempotent: registering again (or for a second backend in the same process) is harmless.
//
// Threads: in Node, tfjs-backend-wasm always runs single-threaded. Its
// WASM_HAS_MULTITHREAD_SUPPORT flag is hard-wired to false under Node (tfjs#3830), so it
// loads the SIMD build without pthreads, and setThreadsCount() only sets the size of an
// XNNPACK thread pool that this build never creates (getThreadsCount() reports 1). Flock
// runs one worker process per core instead, so single-thread speed is what counts.
import type { Tf } from '../../backend.js';
import { batchMatMulKernel } from './batch_mat_mul.js';
import { batchNormGradKernel, batchNormTrainKernel } from './batch_norm.js';
import { conv2DKernel } from './conv2d.js';
import { conv2DBackpropFilterKernel } from './conv2d_backprop_filter.js';
import { conv2DBackpropInputKernel } from './conv2d_backprop_input.js';
import { flockWasmLoader } from './flock_wasm.js';
import { identityKernel } from './identity.js';
import { maxPoolGradKernel } from './max_pool_grad.js';
import { biasTanhKernel, tanhKernel } from './tanh.js';
import { tanhGradKernel } from './tanh_grad.js';
import { tanhMaxPoolGradKernel } from './tanh_max_pool_grad.js';
import { isFlockKernel, registerKernelOnce } from './util.js';

/**
 * `kernels` gives the compiled flock_kernels.wasm (flockKernelsFromFile in Node);
 * `sharedMemory` the memory of multi-threaded tfjs-backend-wasm, which does not export it.
 */
export function registerTrainingKernels(tf: Tf, backend: 'wasm' | 'cpu', kernels: () => WebAssembly.Module, sharedMemory?: () => WebAssembly.Memory | undefined): void {
  // The cpu backend's own kernels are correct (if slow) and serve as the tests' reference.
  if (backend !== 'wasm') return;
  // Flock's WebAssembly SIMD module, instantiated per wasm backend on the first kernel call.
  const flock = flockWasmLoader(kernels, sharedMemory);
  registerKernelOnce(tf, conv2DBackpropFilterKernel(tf, backend, flock));
  registerKernelOnce(tf, conv2DBackpropInputKernel(tf, backend));
  registerKernelOnce(tf, maxPoolGradKernel(tf, flock));
  registerKernelOnce(tf, tanhKernel(tf, flock));
  registerKernelOnce(tf, tanhGradKernel(flock));
  registerKernelOnce(tf, biasTanhKernel(flock));
  registerKernelOnce(tf, tanhMaxPoolGradKernel(flock));
  registerKernelOnce(tf, batchNormTrainKernel(flock));
  registerKernelOnce(tf, batchNormGradKernel(flock));
  registerKernelOnce(tf, identityKernel(tf, backend));
  const matMul = tf.getKernel(tf.BatchMatMul, backend);
  if (matMul && !isFlockKernel(matMul)) registerKernelOnce(tf, batchMatMulKernel(tf, backend, matMul));
  const conv = tf.getKernel(tf.Conv2D, backend);
  if (conv && !isFlockKernel(conv)) registerKernelOnce(tf, conv2DKernel(tf, conv, flock));
}
