// Registers Flock's training kernels on a TensorFlow.js backend (see the files beside this one).
import type { Tf } from '../../backend.js';

export function registerTrainingKernels(_tf: Tf, _backend: 'wasm' | 'cpu'): void {
  // Filled in by the kernels work: conv gradients, MaxPoolGrad, fast elementwise gradients.
}
