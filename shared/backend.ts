// The compute-backend interface. Everything above it (models, workers, coordinator) only
// sees a TensorFlow.js namespace bound to one backend; which library runs the kernels is
// decided once, in loadBackend (backends/load.ts). Results are read asynchronously
// (`await t.data()`): the webgpu backend cannot be read synchronously in Node.
import type * as tfjs from '@tensorflow/tfjs';

export type Tf = typeof tfjs;

export const BACKEND_NAMES = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendRequest = BackendName | 'auto';

export interface ComputeBackend {
  /** Which implementation runs the kernels. */
  readonly name: BackendName;
  /** The TensorFlow.js namespace, with this backend active. */
  readonly tf: Tf;
  /** Human-readable detail for logs, e.g. "tfjs-backend-wasm 4.22.0 (SIMD, 1 thread)". */
  readonly detail: string;
  /** The device that runs the kernels, for people: the WebGPU adapter, or the CPU's model name. */
  readonly adapter: string;
}

export function isBackendRequest(value: string): value is BackendRequest {
  return value === 'auto' || (BACKEND_NAMES as readonly string[]).includes(value);
}
