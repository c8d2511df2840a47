// Helpers shared by Flock's kernels: idempotent registration, and zero-copy float32 access
// to tensor memory on the two JS-hosted backends (the wasm heap, the cpu backend's arrays).
import type * as tfjs from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { Tf } from '../../backend.js';

export type KernelBackendName = 'wasm' | 'cpu';
export type TensorInfo = tfjs.TensorInfo;
export type KernelArgs = Parameters<tfjs.KernelFunc>[0];
export type KernelConfig = tfjs.KernelConfig;

/** The cpu backend's members the kernels use (tfjs-backend-cpu is not a direct dependency). */
interface CpuBackendLike {
  makeTensorInfo(shape: number[], dtype: tfjs.DataType, values?: tfjs.TypedArray): TensorInfo;
  readSync(dataId: object): unknown;
  disposeData(dataId: object, force?: boolean): boolean;
}

/**
 * Float32 memory of one backend. On wasm, `view` is a window onto the heap: any later
 * allocation may grow (and so detach) the heap, so allocate every output first and take
 * the views afterwards, without allocating in between.
 */
export interface FloatMemory {
  alloc(shape: number[]): TensorInfo;
  view(t: TensorInfo): Float32Array;
  dispose(t: TensorInfo): void;
}

export function floatMemory(backendName: KernelBackendName, backend: unknown): FloatMemory {
  if (backendName === 'wasm') {
    const wasm = backend as BackendWasm;
    return {
      alloc: (shape) => wasm.makeOutput(shape, 'float32'),
      view: (t) => wasm.typedArrayFromHeap(t) as Float32Array,
      dispose: (t) => { wasm.disposeData(t.dataId); },
    };
  }
  const cpu = backend as CpuBackendLike;
  return {
    alloc: (shape) => cpu.makeTensorInfo(shape, 'float32', new Float32Array(shape.reduce((a, b) => a * b, 1))),
    view: (t) => cpu.readSync(t.dataId) as Float32Array,
    dispose: (t) => { cpu.disposeData(t.dataId); },
  };
}

/** Runs another kernel registered on the same backend (e.g. the backend's own Conv2D). */
export function callKernel(tf: Tf, name: string, backendName: KernelBackendName, args: KernelArgs): TensorInfo {
  const kernel = tf.getKernel(name, backendName);
  if (!kernel) throw new Error(`kernel ${name} is not registered for backend ${backendName}`);
  const out = kernel.kernelFunc(args);
  if (Array.isArray(out)) throw new Error(`kernel ${name} returned several outputs`);
  return out;
}

/** Marks Flock's kernel functions, so that registering twice is a no-op. */
const FLOCK_TAG = 'flockKernel';
type Tagged = { [FLOCK_TAG]?: true };

function tag<F extends object>(fn: F): F {
  return Object.assign(fn, { [FLOCK_TAG]: true as const });
}

/** Whether a registered kernel is one of Flock's. */
export function isFlockKernel(config: KernelConfig | undefined): boolean {
  return (config?.kernelFunc as Tagged | undefined)?.[FLOCK_TAG] === true;
}

/**
 * Registers a kernel unless one of Flock's is already registered under that name; replaces
 * a backend's own kernel (when Flock's is the fix or the fast path).
 */
export function registerKernelOnce(tf: Tf, config: KernelConfig): void {
  const existing = tf.getKernel(config.kernelName, config.backendName);
  if (isFlockKernel(existing)) return;
  if (existing) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel({ ...config, kernelFunc: tag(config.kernelFunc) });
}
