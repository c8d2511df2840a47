// Bundles the dashboard page (dashboard/app.ts, uPlot, CSS) into dist/dashboard/ with
// esbuild, so the coordinator serves it offline. Run by `npm run build`.
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
