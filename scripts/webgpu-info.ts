// Prints the WebGPU adapter Dawn finds here (what `--backend webgpu` would run on), or what
// the machine lacks. Exit status 0 with an adapter, 1 without. Used by scripts/gpu-check.sh.
import { adapterSummary, findWebgpuAdapter } from '../shared/backends/webgpu.js';
import { errorMessage } from '../shared/errors.js';

try {
  const { report } = await findWebgpuAdapter();
  console.log(`webgpu adapter: ${adapterSummary(report)}`);
  console.log(`  vendor: ${report.vendor}\n  architecture: ${report.architecture}\n  device: ${report.device}\n  description: ${report.description}`);
  console.log(report.software
    ? '  SOFTWARE adapter: --backend auto will not use it (slower than wasm); --backend webgpu will, with a warning'
    : '  hardware adapter: --backend auto uses it (after tensorflow, if installed)');
} catch (err) {
  console.log(`webgpu: ${errorMessage(err)}`);
  process.exitCode = 1;
}
