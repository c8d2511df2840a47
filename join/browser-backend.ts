// TensorFlow.js backends in a browser tab, best first: webgpu on a hardware adapter, wasm
// (multi-threaded where the page is cross-origin isolated), webgl, cpu. `?backend=` forces
// one; `wasm-st` (or `?threads=1`) is single-threaded wasm: the very build Node runs, so its
// results are bit-identical to a Node worker's. Flock's kernels are registered as in Node:
// its wasm SIMD kernels (fetched from the coordinator; on threaded wasm the build that
// imports shared memory), its max-pool gradient on webgpu.
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-webgpu';
import type { ComputeBackend } from '../shared/backend.js';
import { registerTrainingKernels } from '../shared/backends/kernels/register.js';
import { registerKernelOnce } from '../shared/backends/kernels/util.js';
import { webgpuMaxPoolGradKernel } from '../shared/backends/webgpu-kernels/max_pool_grad.js';

export const BROWSER_BACKENDS = ['auto', 'webgpu', 'wasm', 'wasm-st', 'webgl', 'cpu'] as const;
export type BrowserBackendRequest = (typeof BROWSER_BACKENDS)[number];

export interface BrowserBackend {
  readonly backend: ComputeBackend;
  /** What the page shows and the coordinator logs, e.g. "wasm (4 threads)". */
  readonly label: string;
  /** The WebGPU adapter, or what runs the kernels. */
  readonly adapter: string;
  /** Backends tried first and why they were skipped. */
  readonly skipped: readonly string[];
}

export interface BrowserBackendOptions {
  readonly request: BrowserBackendRequest;
  /** wasm threads; 0 = as many as the browser reports cores. */
  readonly threads: number;
  /** Where tfjs-backend-wasm's .wasm files and flock_kernels.wasm are served (ends with '/'). */
  readonly wasmPath: string;
}

// The few WebGPU types used here (TypeScript's DOM library does not have them).
interface GpuAdapterInfo { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter?: boolean }
interface GpuAdapter { info?: GpuAdapterInfo; isFallbackAdapter?: boolean }
interface Gpu { requestAdapter(o: { powerPreference: 'high-performance' }): Promise<GpuAdapter | null> }

const SOFTWARE = /llvmpipe|lavapipe|swiftshader|softpipe|software/i;

async function webgpuAdapter(): Promise<{ text: string; software: boolean }> {
  const gpu = (navigator as { gpu?: Gpu }).gpu;
  if (!gpu) throw new Error('this browser has no WebGPU (navigator.gpu)');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('no WebGPU adapter');
  const i = adapter.info ?? { vendor: '', architecture: '', device: '', description: '' };
  const software = adapter.isFallbackAdapter === true || i.isFallbackAdapter === true || [i.vendor, i.architecture, i.device, i.description].some((s) => SOFTWARE.test(s));
  const text = `${i.description || i.device || 'unnamed adapter'} (vendor ${i.vendor || '?'}, architecture ${i.architecture || '?'}${software ? ', software' : ''})`;
  return { text, software };
}

/**
 * Runs `init` and returns the shared WebAssembly.Memory it created. Threaded
 * tfjs-backend-wasm creates its memory itself and neither exports it nor keeps it anywhere
 * reachable; Flock's kernels must import it. The constructor is wrapped only for this call.
 */
async function sharedMemoryOf(init: () => Promise<void>): Promise<WebAssembly.Memory> {
  const Original = WebAssembly.Memory;
  let memory: WebAssembly.Memory | undefined;
  (WebAssembly as { Memory: typeof Original }).Memory = new Proxy(Original, {
    construct(target, args: [WebAssembly.MemoryDescriptor], newTarget: new (...a: unknown[]) => object) {
      const m = Reflect.construct<[WebAssembly.MemoryDescriptor], WebAssembly.Memory>(target, args, newTarget);
      if (args[0]?.shared === true) memory = m;
      return m;
    },
  });
  try {
    await init();
  } finally {
    (WebAssembly as { Memory: typeof Original }).Memory = Original;
  }
  if (!memory) throw new Error('multi-threaded tfjs-backend-wasm created no shared memory; try ?backend=wasm-st');
  return memory;
}

async function activate(name: string): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`TensorFlow.js could not initialise '${name}'`);
  await tf.ready();
}

async function loadOne(name: Exclude<BrowserBackendRequest, 'auto'>, opts: BrowserBackendOptions, auto: boolean): Promise<BrowserBackend> {
  const base = { skipped: [] as string[] };
  switch (name) {
    case 'webgpu': {
      const adapter = await webgpuAdapter();
      if (adapter.software && auto) throw new Error(`software adapter only (${adapter.text}): slower than wasm`);
      registerKernelOnce(tf, webgpuMaxPoolGradKernel(tf));
      await activate('webgpu');
      return { ...base, backend: { name: 'webgpu', tf, detail: `tfjs-backend-webgpu ${tf.version.tfjs} on ${adapter.text}`, adapter: adapter.text }, label: 'webgpu', adapter: adapter.text };
    }
    case 'wasm':
    case 'wasm-st': {
      const wanted = name === 'wasm-st' ? 1 : opts.threads;
      // Threads need SharedArrayBuffer, which only a cross-origin-isolated page has (COOP+COEP).
      const threaded = wanted !== 1 && globalThis.crossOriginIsolated === true;
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', threaded);
      if (threaded && wanted > 1) setThreadsCount(wanted);
      setWasmPaths(opts.wasmPath);
      const kernels = await WebAssembly.compileStreaming(fetch(`${opts.wasmPath}${threaded ? 'flock_kernels_shared.wasm' : 'flock_kernels.wasm'}`));
      let memory: WebAssembly.Memory | undefined;
      registerTrainingKernels(tf, 'wasm', () => kernels, () => memory);
      if (threaded) memory = await sharedMemoryOf(() => activate('wasm'));
      else await activate('wasm');
      const threads = getThreadsCount();
      const label = threads > 1 ? `wasm (${threads} threads)` : 'wasm (1 thread)';
      const adapter = `tfjs-backend-wasm, SIMD, ${threads} thread${threads > 1 ? 's' : ''}, Flock kernels`;
      return { ...base, backend: { name: 'wasm', tf, detail: `tfjs-backend-wasm ${tf.version.tfjs} (${adapter})`, adapter }, label, adapter };
    }
    case 'webgl': {
      await activate('webgl');
      const gl = document.createElement('canvas').getContext('webgl2');
      const renderer = gl ? String(gl.getParameter(gl.RENDERER)) : 'WebGL';
      // Flock's BackendName has no webgl: the session only reports the name in hello.
      return { ...base, backend: { name: 'webgl' as ComputeBackend['name'], tf, detail: `tfjs-backend-webgl on ${renderer}`, adapter: renderer }, label: 'webgl', adapter: renderer };
    }
    case 'cpu':
      await activate('cpu');
      return { ...base, backend: { name: 'cpu', tf, detail: 'tfjs pure-JS cpu backend', adapter: 'JavaScript' }, label: 'cpu', adapter: 'JavaScript' };
  }
}

export async function loadBrowserBackend(opts: BrowserBackendOptions): Promise<BrowserBackend> {
  tf.env().set('PROD', true);
  if (opts.request !== 'auto') return loadOne(opts.request, opts, false);
  const skipped: string[] = [];
  for (const name of ['webgpu', 'wasm', 'webgl', 'cpu'] as const) {
    try {
      return { ...(await loadOne(name, opts, true)), skipped };
    } catch (err) {
      skipped.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  throw new Error(`no TensorFlow.js backend could be loaded (${skipped.join('; ')})`);
}
