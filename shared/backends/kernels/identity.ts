// Identity: tfjs-backend-wasm copies the tensor, and the engine clones (Identity) every
// tensor it saves for the backward pass, so a training step spent ~1 ms per saved 2M-element
// activation on copies. Tensors are immutable, so sharing the memory with a reference count
// is enough, exactly as the cpu backend's Identity and the wasm backend's own Reshape do.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { Tf } from '../../backend.js';
import type { KernelArgs, KernelConfig, TensorInfo } from './util.js';

export function identityKernel(tf: Tf, backendName: 'wasm'): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { x } = inputs as unknown as { x: TensorInfo };
    (backend as BackendWasm).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  return { kernelName: tf.Identity, backendName, kernelFunc };
}
