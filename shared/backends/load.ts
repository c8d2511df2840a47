// Picks and initialises a TensorFlow.js backend. `auto` prefers native TensorFlow
// (tfjs-node-gpu, then tfjs-node), then WebGPU on a hardware adapter, then WASM, then the
// pure-JS cpu backend. A software WebGPU adapter (lavapipe, SwiftShader) is slower than
// wasm, so `auto` never takes it; asked for by name it works, with a warning.
import { cpus } from 'node:os';
import type { Logger } from 'pino';
import type { BackendName, BackendRequest, ComputeBackend, Tf } from '../backend.js';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { registerTrainingKernels } from './kernels/register.js';
import { adapterSummary, findWebgpuAdapter } from './webgpu.js';

/** The CPU's model name, as the OS reports it (the wasm, cpu and tfjs-node backends run there). */
const cpuModel = (): string => `CPU: ${cpus()[0]?.model.trim() || 'unknown'}`;

const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

async function loadTensorflow(): Promise<ComputeBackend> {
  const failures: string[] = [];
  for (const pkg of NATIVE_PACKAGES) {
    try {
      const tf = (await import(pkg)) as Tf;
      await tf.ready();
      return { name: 'tensorflow', tf, detail: `${pkg} ${tf.version.tfjs} (${tf.getBackend()})`, adapter: pkg.endsWith('-gpu') ? 'CUDA (libtensorflow)' : cpuModel() };
    } catch (err) {
      failures.push(`${pkg}: ${errorMessage(err).split('\n')[0] ?? ''}`);
    }
  }
  throw new FlockError(
    ErrorCode.BACKEND_UNAVAILABLE,
    `the 'tensorflow' backend is not installed (${failures.join('; ')}). ` +
      "Install it with 'npm install @tensorflow/tfjs-node-gpu' (CUDA) or 'npm install @tensorflow/tfjs-node' (CPU); " +
      "their install step downloads libtensorflow, so it needs internet access. Or use --backend wasm.",
  );
}

async function loadJs(name: 'wasm' | 'cpu'): Promise<ComputeBackend> {
  const tf = await import('@tensorflow/tfjs');
  let detail = `@tensorflow/tfjs ${tf.version.tfjs} pure-JS cpu backend`;
  if (name === 'wasm') {
    try {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      detail = `@tensorflow/tfjs-backend-wasm ${wasm.version_wasm}`;
    } catch (err) {
      throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `the 'wasm' backend could not be loaded (${errorMessage(err)}); run 'npm ci' to install @tensorflow/tfjs-backend-wasm, or use --backend cpu.`);
    }
  }
  // PROD silences tfjs's console banner suggesting tfjs-node: `auto` already tried it and
  // logged why it was skipped, and stray console output would break JSON-lines logs.
  tf.env().set('PROD', true);
  registerTrainingKernels(tf, name);
  const ok = await tf.setBackend(name);
  if (!ok) throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `TensorFlow.js could not initialise the '${name}' backend; try --backend cpu.`);
  await tf.ready();
  return { name, tf, detail, adapter: cpuModel() };
}

/** The webgpu backend on whatever adapter Dawn finds; `auto` takes only a hardware one. */
async function loadWebgpu(logger: Logger, auto: boolean): Promise<ComputeBackend> {
  const found = await findWebgpuAdapter().catch((err: unknown) => {
    // Said in full here: auto's summary keeps only the first clause, and on a GPU server
    // the diagnosis (no Vulkan loader, no ICD, no 'graphics' capability) is what matters.
    if (auto) logger.info({ event: 'webgpu_adapter', adapter: null, used: false, why: errorMessage(err) }, `no webgpu adapter: ${errorMessage(err)}`);
    throw err;
  });
  const { report } = found;
  const adapter = { vendor: report.vendor, architecture: report.architecture, device: report.device, description: report.description, software: report.software };
  if (report.software && auto) {
    const why = 'software adapter: slower than wasm, never picked by auto (ask for it with --backend webgpu)';
    logger.info({ event: 'webgpu_adapter', adapter, used: false, why }, `webgpu adapter ${adapterSummary(report)} not used: ${why}`);
    throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `software adapter only, auto skips it: ${adapterSummary(report)}`);
  }
  if (report.software) {
    logger.warn({ event: 'webgpu_adapter', adapter, used: true, why: 'asked for by name' },
      `webgpu adapter ${adapterSummary(report)} is a SOFTWARE adapter: correct but slow (~100 images/s); use it for tests, not training`);
  } else {
    logger.info({ event: 'webgpu_adapter', adapter, used: true, why: auto ? 'hardware adapter' : 'asked for by name' }, `webgpu adapter ${adapterSummary(report)}`);
  }
  return found.load();
}

function load(name: BackendName, logger: Logger, auto: boolean): Promise<ComputeBackend> {
  switch (name) {
    case 'tensorflow':
      return loadTensorflow();
    case 'webgpu':
      return loadWebgpu(logger, auto);
    case 'wasm':
    case 'cpu':
      return loadJs(name);
  }
}

export async function loadBackend(request: BackendRequest, logger: Logger): Promise<ComputeBackend> {
  if (request !== 'auto') {
    const backend = await load(request, logger, false);
    logger.info({ event: 'backend', backend: backend.name, detail: backend.detail }, `compute backend: ${backend.detail}`);
    return backend;
  }
  const order: BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];
  const skipped: string[] = [];
  for (const name of order) {
    try {
      const backend = await load(name, logger, true);
      const why = skipped.length === 0 ? 'fastest available' : `fastest that loads; skipped ${skipped.join('; ')}`;
      logger.info({ event: 'backend', backend: backend.name, detail: backend.detail, why }, `compute backend: ${backend.detail} (${why})`);
      return backend;
    } catch (err) {
      skipped.push(`${name}: ${errorMessage(err).split(' (')[0] ?? ''}`);
    }
  }
  throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `no TensorFlow.js backend could be loaded (${skipped.join('; ')}); run 'npm ci'.`);
}
