// Node reads Flock's kernels from flock_kernels.wasm beside this file (`npm run build:wasm`).
import { readFileSync } from 'node:fs';

export const FLOCK_KERNELS_FILE = new URL('./flock_kernels.wasm', import.meta.url);

/** Compiles flock_kernels.wasm synchronously (once per process: the loader keeps it). */
export const flockKernelsFromFile = (): WebAssembly.Module => new WebAssembly.Module(readFileSync(FLOCK_KERNELS_FILE));

/** The same kernels importing a shared memory, for multi-threaded wasm in browsers (served by /join). */
export const FLOCK_SHARED_KERNELS_FILE = new URL('./flock_kernels_shared.wasm', import.meta.url);
