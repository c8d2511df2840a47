// Picks and initialises a TensorFlow.js backend. `auto` prefers native TensorFlow
// (tfjs-node-gpu, then tfjs-node), then WASM, then the pure-JS cpu backend.
import type { Logger } from 'pino';
import type { BackendName, BackendRequest, ComputeBackend, Tf } from '../backend.js';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { registerTrainingKernels } from './kernels/register.js';

const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

async function loadTensorflow(): Promise<ComputeBackend> {
  const failures: string[] = [];
  for (const pkg of NATIVE_PACKAGES) {
    try {
      const tf = (await import(pkg)) as Tf;
      await tf.ready();
      return { name: 'tensorflow', tf, detail: `${pkg} ${tf.version.tfjs} (${tf.getBackend()})` };
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
  return { name, tf, detail };
}

export async function loadBackend(request: BackendRequest, logger: Logger): Promise<ComputeBackend> {
  if (request !== 'auto') {
    const backend = request === 'tensorflow' ? await loadTensorflow() : await loadJs(request);
    logger.info({ event: 'backend', backend: backend.name, detail: backend.detail }, `compute backend: ${backend.detail}`);
    return backend;
  }
  const order: BackendName[] = ['tensorflow', 'wasm', 'cpu'];
  const skipped: string[] = [];
  for (const name of order) {
    try {
      const backend = name === 'tensorflow' ? await loadTensorflow() : await loadJs(name);
      const why = skipped.length === 0 ? 'fastest available' : `fastest that loads; skipped ${skipped.join('; ')}`;
      logger.info({ event: 'backend', backend: backend.name, detail: backend.detail, why }, `compute backend: ${backend.detail} (${why})`);
      return backend;
    } catch (err) {
      skipped.push(`${name}: ${errorMessage(err).split(' (')[0] ?? ''}`);
    }
  }
  throw new FlockError(ErrorCode.BACKEND_UNAVAILABLE, `no TensorFlow.js backend could be loaded (${skipped.join('; ')}); run 'npm ci'.`);
}
