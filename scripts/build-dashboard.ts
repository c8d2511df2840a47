// Bundles the coordinator's browser pages with esbuild, so it serves them offline: the
// dashboard (dashboard/app.ts, uPlot, CSS) into dist/dashboard/, and the /join worker page
// (join/app.ts: the worker loop and session, msgpackr, pino's browser build, TensorFlow.js
// with its webgpu, wasm, webgl and cpu backends) into dist/join/. Run by `npm run build`.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

await build({
  entryPoints: [`${root}dashboard/app.ts`],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  outdir: `${root}dist/dashboard`,
  entryNames: 'app',
  logLevel: 'warning',
  tsconfig: `${root}dashboard/tsconfig.json`,
});

await build({
  entryPoints: [`${root}join/app.ts`],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  outdir: `${root}dist/join`,
  entryNames: 'join',
  logLevel: 'warning',
  tsconfig: `${root}join/tsconfig.json`,
});
