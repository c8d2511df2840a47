// The dashboard page: a static HTML shell plus the bundle `npm run build` makes with
// esbuild (dist/dashboard/app.js and app.css: our client code and uPlot, nothing remote).
import { fileURLToPath } from 'node:url';
import { pageHtml, readBundleFiles } from '../bundle-files.js';

export interface DashboardAssets {
  readonly html: string;
  readonly script: Buffer;
  readonly style: Buffer;
}

/** Where the build puts the bundle, next to the compiled coordinator. */
export const BUNDLE_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const HTML = pageHtml({
  title: 'Flock dashboard', stylesheet: '/app.css', script: '/app.js',
  noscript: 'The Flock dashboard needs JavaScript; /metrics serves the same numbers as text.', main: '<main id="app"></main>',
});

export async function loadDashboardAssets(dir = BUNDLE_DIR): Promise<DashboardAssets> {
  const { script, style } = await readBundleFiles({ script: `${dir}app.js`, style: `${dir}app.css` }, `the dashboard bundle in ${dir} is`);
  return { html: HTML, script, style };
}
