// Bundles the coordinator's browser pages with esbuild, so it serves them offline: the
// dashboard (dashboard/app.ts, uPlot, CSS) into dist/dashboard/, and the /join worker page
// (join/app.ts: the worker loop and session, msgpackr, pino's browser build, TensorFlow.js
// with its webgpu, wasm, webgl and cpu backends) into dist/join/. Run by `npm run build`.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** One browser page: `<dir>/app.ts` and what it imports, minified into dist/<dir>/<name>.js. */
async function bundlePage(dir: string, name: string): Promise<void> {
  await build({
    entryPoints: [`${root}${dir}/app.ts`],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    outdir: `${root}dist/${dir}`,
    entryNames: name,
    logLevel: 'warning',
    tsconfig: `${root}${dir}/tsconfig.json`,
  });
}

await bundlePage('dashboard', 'app');
await bundlePage('join', 'join');
