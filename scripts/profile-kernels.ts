// Per-kernel time of one training step (gradients of a batch of 64) on a backend: every
// registered kernel is wrapped with a timer; time spent in kernels a kernel calls itself
// (e.g. Flock's Conv2DBackpropFilter calling BatchMatMul) counts for the callee only.
// Usage: node dist/scripts/profile-kernels.js [model] [backend] [steps] [--shapes]
// (--shapes: one line per kernel and input shapes)
import pino from 'pino';
import { loadBackend } from '../shared/backends/load.js';
import { IMAGE_BYTES, isModelName } from '../shared/models/layers.js';
import { ModelRuntime, type Batch } from '../shared/models/runtime.js';
import { initialState, modelSpec } from '../shared/models/spec.js';
import { Rng } from '../shared/random.js';

async function main(): Promise<void> {
  const detail = process.argv.includes('--shapes');
  const [modelArg = 'net', backendArg = 'wasm', stepsArg = '20'] = process.argv.slice(2).filter((a) => a !== '--shapes');
  if (!isModelName(modelArg)) throw new Error(`unknown model ${modelArg}`);
  if (backendArg !== 'wasm' && backendArg !== 'cpu') throw new Error('backend: wasm or cpu');
  const steps = Number(stepsArg);
  const backend = await loadBackend(backendArg, pino({ level: 'silent' }));
  const tf = backend.tf;
  const totals = new Map<string, { ms: number; calls: number }>();
  const stack: number[] = []; // child time accumulated per open kernel
  let recording = false;
  for (const config of tf.getKernelsForBackend(backendArg)) {
    const inner = config.kernelFunc;
    const name = config.kernelName;
    tf.unregisterKernel(name, backendArg);
    tf.registerKernel({
      ...config,
      kernelFunc: (args) => {
        stack.push(0);
        const t0 = performance.now();
        const out = inner(args);
        const total = performance.now() - t0;
        const children = stack.pop()!;
        if (stack.length > 0) stack[stack.length - 1]! += total;
        if (recording) {
          const key = detail ? `${name} ${Object.values(args.inputs).map((t) => `[${t!.shape.join(',')}]`).join(' ')}` : name;
          const e = totals.get(key) ?? { ms: 0, calls: 0 };
          e.ms += total - children;
          e.calls++;
          totals.set(key, e);
        }
        return out;
      },
    });
  }
  const model = modelSpec(modelArg);
  const runtime = new ModelRuntime(backend, model);
  runtime.setState(initialState(model, 0));
  const rng = new Rng(1);
  const images = new Uint8Array(64 * IMAGE_BYTES);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextUint32() & 255;
  const batch: Batch = { images, labels: new Uint8Array(64).map((_, i) => i & 1), count: 64 };
  for (let i = 0; i < 5; i++) await runtime.gradients(batch, i);
  recording = true;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await runtime.gradients(batch, 100 + i);
  const wall = (performance.now() - t0) / steps;
  const cpu = process.cpuUsage(c0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / steps;
  let inKernels = 0;
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  for (const [name, e] of rows) {
    inKernels += e.ms;
    console.log(`${name.padEnd(detail ? 60 : 24)} ${(e.ms / steps).toFixed(2).padStart(7)} ms  ${String(e.calls / steps).padStart(5)} calls`);
  }
  console.log(`kernels ${(inKernels / steps).toFixed(2)} ms, step wall ${wall.toFixed(2)} ms, step CPU ${cpuMs.toFixed(2)} ms (${modelArg}, ${backendArg})`);
  runtime.dispose();
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1; });
