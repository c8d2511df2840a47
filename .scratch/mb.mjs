import pino from 'pino';
import { loadBackend } from '../dist/shared/backends/load.js';
import { ModelRuntime } from '../dist/shared/models/runtime.js';
import { initialState, modelSpec } from '../dist/shared/models/spec.js';
const b = await loadBackend('wasm', pino({level:'silent'}));
const model = modelSpec(process.argv[2] ?? 'net');
const rt = new ModelRuntime(b, model); rt.setState(initialState(model, 0));
for (const n of [64, 32, 16]) {
  const images = new Uint8Array(n*3072).map((_, i) => (i*7919) & 255); const labels = new Uint8Array(n).map((_, i) => i & 1);
  const batch = { images, labels, count: n };
  for (let i = 0; i < 5; i++) await rt.gradients(batch, i);
  const steps = Math.round(40*64/n); const t0 = performance.now(); const c0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) { rt.setState(initialState(model, 0)); await rt.gradients(batch, i); }
  const ms = (performance.now()-t0)/steps; const cpu = process.cpuUsage(c0);
  console.log(process.pid, model.name, 'batch', n, ms.toFixed(2), 'ms', (n*1000/ms).toFixed(0), 'img/s', 'cpu ms', ((cpu.user+cpu.system)/1000/steps).toFixed(2));
}
