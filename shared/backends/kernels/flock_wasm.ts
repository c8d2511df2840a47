// Loads Flock's WebAssembly SIMD kernels (shared/backends/wasm-src, built into
// flock_kernels.wasm beside this file) against one tfjs-backend-wasm instance. The module
// imports that backend's own WebAssembly.Memory, so the kernels take tensors' heap offsets
// and work in place, with no copies; a heap that grows stays the same Memory for both.
// The compiled module comes from the caller: read from disk in Node (flock_wasm_file.ts),
// fetched by the browser worker's page. Multi-threaded tfjs-backend-wasm (browsers only)
// has a shared memory that it does not export: the caller then passes it, and a build of
// the kernels that imports shared memory (flock_kernels_shared.wasm).
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from './util.js';

/** The exports of flock_kernels.wasm; pointers are byte offsets into the backend's heap. */
export interface FlockWasmExports {
  tanh(src: number, dst: number, n: number, table: number): void;
  biasTanh(src: number, bias: number, dst: number, n: number, c: number, table: number): void;
  tanhGrad(y: number, dy: number, dx: number, n: number): void;
  maxPoolGrad2x2(x: number, dy: number, dx: number, batch: number, inH: number, inW: number, c: number, outH: number, outW: number): void;
  conv2dForward(x: number, w: number, out: number, batch: number, inH: number, inW: number, c: number,
    outH: number, outW: number, o: number, kh: number, kw: number, padTop: number, padLeft: number): void;
  conv2dFilterGrad(x: number, dy: number, dw: number, batch: number, inH: number, inW: number, c: number,
    outH: number, outW: number, o: number, kh: number, kw: number, padTop: number, padLeft: number): void;
  tanhMaxPoolGrad(y: number, dp: number, dx: number, batch: number, inH: number, inW: number, c: number, outH: number, outW: number,
    dbias: number, scratch: number): void;
  batchNormStats(x: number, bias: number, rows: number, w: number, c: number, mean: number, variance: number, scratch: number): void;
  batchNormApply(x: number, bias: number, n: number, c: number, mean: number, variance: number, gamma: number, beta: number, eps: number,
    y: number, xhat: number, scale: number, scratch: number): void;
  batchNormGrad(dy: number, xhat: number, scale: number, rows: number, w: number, c: number,
    dx: number, dgamma: number, dbeta: number, dbias: number, scratch: number): void;
}

export interface FlockWasm {
  readonly exports: FlockWasmExports;
  /** Heap offset of a float32 tensor's data. */
  ptr(t: TensorInfo): number;
  /** tanh(j / 64) for j = -608..608 as float64, the Tanh kernel's table (allocated once per backend). */
  readonly tanhTable: number;
}

/** What the kernels need of the emscripten module behind tfjs-backend-wasm 4.x. */
interface EmscriptenModule {
  asm?: { memory?: unknown };
  _malloc(bytes: number): number;
  HEAPF64: Float64Array;
}

export const TANH_TABLE_STEPS = 64;
export const TANH_TABLE_HALF = 608; // 9.5 · 64: tanh(9.5) rounds to 1 in float32

/** One compiled module per process, one instance per backend; built on first use. */
export function flockWasmLoader(kernels: () => WebAssembly.Module, sharedMemory?: () => WebAssembly.Memory | undefined): (backend: unknown) => FlockWasm {
  let compiled: WebAssembly.Module | undefined;
  const instances = new WeakMap<object, FlockWasm>();
  return (backend) => {
    const wasmBackend = backend as BackendWasm;
    const cached = instances.get(wasmBackend);
    if (cached) return cached;
    const module = wasmBackend.wasm as unknown as EmscriptenModule;
    const memory = module.asm?.memory ?? sharedMemory?.();
    if (!(memory instanceof WebAssembly.Memory)) {
      throw new Error("Flock's wasm kernels: tfjs-backend-wasm does not expose its WebAssembly.Memory (Module.asm.memory); this version is not supported");
    }
    compiled ??= kernels();
    const instance = new WebAssembly.Instance(compiled, { env: { memory } });
    const tanhTable = module._malloc((2 * TANH_TABLE_HALF + 1) * 8) >>> 0;
    const heap = new Float64Array(memory.buffer, tanhTable, 2 * TANH_TABLE_HALF + 1);
    for (let j = -TANH_TABLE_HALF; j <= TANH_TABLE_HALF; j++) heap[j + TANH_TABLE_HALF] = Math.tanh(j / TANH_TABLE_STEPS);
    const flock: FlockWasm = {
      exports: instance.exports as unknown as FlockWasmExports,
      ptr: (t) => {
        const data = wasmBackend.dataIdMap.get(t.dataId);
        if (!data) throw new Error('tensor data is not on the wasm backend');
        return data.memoryOffset;
      },
      tanhTable,
    };
    instances.set(wasmBackend, flock);
    return flock;
  };
}
