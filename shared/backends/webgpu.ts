// The webgpu backend: Dawn (npm package `webgpu`, a prebuilt dawn.node) gives Node a WebGPU
// implementation over Vulkan (Linux), Metal (macOS) or D3D12 (Windows), and
// @tensorflow/tfjs-backend-webgpu runs TensorFlow.js on it. No CUDA, nothing downloaded at
// install time. Results must be read with `await data()`: in Node this backend's dataSync
// goes through OffscreenCanvas, which Node lacks.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelBackend } from '@tensorflow/tfjs';
import type { ComputeBackend } from '../backend.js';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { registerKernelOnce } from './kernels/util.js';
import { webgpuMaxPoolGradKernel } from './webgpu-kernels/max_pool_grad.js';

/** What the adapter says about itself, and whether it is a software (CPU) implementation. */
export interface AdapterReport {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly software: boolean;
}

/** A WebGPU adapter Dawn found; `load` turns it into a compute backend. */
export interface FoundAdapter {
  readonly report: AdapterReport;
  load(): Promise<ComputeBackend>;
}

// The handful of WebGPU types used here (dawn.node's objects); @webgpu/types is not a
// dependency of Flock, and these are all it needs.
interface GpuAdapterInfo {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly isFallbackAdapter?: boolean;
}
interface GpuDevice {
  destroy(): void;
}
interface GpuAdapter {
  readonly info: GpuAdapterInfo;
  readonly isFallbackAdapter?: boolean;
  readonly limits: Record<string, number>;
  requestDevice(descriptor: { requiredLimits: Record<string, number> }): Promise<GpuDevice>;
}
interface Gpu {
  requestAdapter(options: { powerPreference: 'high-performance' }): Promise<GpuAdapter | null>;
}
interface DawnModule {
  create(flags: string[]): Gpu;
  globals: Record<string, unknown>;
}
interface WebgpuBackendModule {
  WebGPUBackend: new (device: GpuDevice, info: GpuAdapterInfo) => object;
}

/** Software rasterisers that implement Vulkan on the CPU: correct, but slower than wasm. */
const SOFTWARE = /llvmpipe|lavapipe|swiftshader|softpipe|software/i;

function describe(adapter: GpuAdapter): AdapterReport {
  const { vendor, architecture, device, description } = adapter.info;
  const software = adapter.info.isFallbackAdapter === true || adapter.isFallbackAdapter === true
    || [vendor, architecture, device, description].some((s) => SOFTWARE.test(s));
  return { vendor, architecture, device, description, software };
}

export function adapterSummary(r: AdapterReport): string {
  return `${r.description || r.device || 'unnamed adapter'} (vendor ${r.vendor || '?'}, architecture ${r.architecture || '?'}${r.software ? ', software' : ''})`;
}

/** What is missing for Dawn to find a Vulkan device on Linux, from what is on disk. */
function linuxDiagnosis(): string {
  const libDirs = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/usr/local/lib'];
  const loader = libDirs.some((d) => existsSync(join(d, 'libvulkan.so.1')));
  const icds = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'].flatMap((d) => {
    try {
      return readdirSync(d).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
  });
  const found = `Found here: Vulkan loader ${loader ? 'yes' : 'NO'}; Vulkan ICD files: ${icds.length > 0 ? icds.join(', ') : 'none'}.`;
  return `${found} A GPU worker needs the Vulkan loader (Debian/Ubuntu: apt-get install libvulkan1) and the GPU driver's Vulkan ICD ` +
    '(a JSON file in /usr/share/vulkan/icd.d or /etc/vulkan/icd.d, e.g. nvidia_icd.json, installed with the driver; ' +
    'VK_ICD_FILENAMES/VK_DRIVER_FILES must not point elsewhere). In a container with the NVIDIA container toolkit, ' +
    "NVIDIA_DRIVER_CAPABILITIES must include 'graphics' (e.g. 'compute,utility,graphics' or 'all'), or the Vulkan ICD is not mounted. " +
    'For a software adapter (tests only, slow) run scripts/install-vulkan.sh.';
}

function noAdapter(why: string): FlockError {
  const platform = process.platform === 'linux' ? linuxDiagnosis()
    : process.platform === 'darwin' ? 'Dawn uses Metal on macOS; this Mac reported no Metal device.'
      : 'Dawn uses D3D12 on Windows; update the GPU driver.';
  return new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `the 'webgpu' backend found no GPU adapter (${why}). ${platform} Or use --backend wasm.`);
}

/** Asks Dawn for its best adapter. Throws a FlockError that says what the machine lacks. */
export async function findWebgpuAdapter(): Promise<FoundAdapter> {
  let dawn: DawnModule;
  try {
    dawn = (await import('webgpu')) as unknown as DawnModule;
  } catch (err) {
    throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `the 'webgpu' backend could not load Dawn (${errorMessage(err).split('\n')[0] ?? ''}); run 'npm ci' to install the 'webgpu' package (it has prebuilt dawn.node for linux-x64/arm64, macOS and Windows), or use --backend wasm.`);
  }
  const gpu = dawn.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw noAdapter('navigator.gpu.requestAdapter() returned null');
  const report = describe(adapter);
  return { report, load: () => loadOn(dawn, gpu, adapter, report) };
}

async function loadOn(dawn: DawnModule, gpu: Gpu, adapter: GpuAdapter, report: AdapterReport): Promise<ComputeBackend> {
  const tf = await import('@tensorflow/tfjs');
  tf.env().set('PROD', true);
  // tfjs-backend-webgpu refers to WebGPU's global constants (GPUBufferUsage, GPUMapMode, …)
  // as browser globals; dawn.node provides them. Only names not already defined are added.
  const globals = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(dawn.globals)) if (!(name in globals)) globals[name] = value;
  const { WebGPUBackend } = (await import('@tensorflow/tfjs-backend-webgpu')) as unknown as WebgpuBackendModule;
  // Flock's kernels where tfjs-backend-webgpu's are wrong (test/backends.test.ts checks all).
  registerKernelOnce(tf, webgpuMaxPoolGradKernel(tf));
  // One webgpu backend per process: a second load (tests, bench) reuses the registered one.
  if (!('webgpu' in tf.engine().registryFactory)) {
    // The limits tfjs-backend-webgpu's own factory asks for: the adapter's, not WebGPU's defaults.
    const names = ['maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup'];
    const requiredLimits = Object.fromEntries(names.map((n) => [n, adapter.limits[n]!]));
    const device = await adapter.requestDevice({ requiredLimits });
    tf.registerBackend('webgpu', () => withNavigatorGpu(gpu, () => new WebGPUBackend(device, adapter.info) as KernelBackend));
  }
  const ok = await tf.setBackend('webgpu');
  if (!ok) {
    throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `TensorFlow.js could not initialise the 'webgpu' backend on ${adapterSummary(report)}; use --backend wasm.`);
  }
  await tf.ready();
  return { name: 'webgpu', tf, detail: `@tensorflow/tfjs-backend-webgpu (tfjs ${tf.version.tfjs}) on ${adapterSummary(report)}`, adapter: adapterSummary(report) };
}

/**
 * WebGPUBackend's constructor checks `navigator.gpu`, which Node does not have. It is set
 * only for that call: a `navigator.gpu` left on globalThis would be Dawn's instance held for
 * the life of the process, and tfjs would read nothing else from it.
 */
function withNavigatorGpu<T>(gpu: Gpu, f: () => T): T {
  const own = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  try {
    return f();
  } finally {
    if (own) Object.defineProperty(globalThis, 'navigator', own);
    else delete (globalThis as { navigator?: unknown }).navigator;
  }
}
