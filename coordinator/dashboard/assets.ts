// The dashboard page: a static HTML shell plus the bundle `npm run build` makes with
// esbuild (dist/dashboard/app.js and app.css: our client code and uPlot, nothing remote).
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ErrorCode, FlockError } from '../../shared/errors.js';

export interface DashboardAssets {
  readonly html: string;
  readonly script: Buffer;
  readonly style: Buffer;
}

/** Where the build puts the bundle, next to the compiled coordinator. */
export const BUNDLE_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flock dashboard</title>
<link rel="stylesheet" href="/app.css">
<script type="module" src="/app.js"></script>
</head>
<body>
<noscript>The Flock dashboard needs JavaScript; /metrics serves the same numbers as text.</noscript>
<main id="app"></main>
</body>
</html>
`;

export async function loadDashboardAssets(dir = BUNDLE_DIR): Promise<DashboardAssets> {
  try {
    const [script, style] = await Promise.all([readFile(`${dir}app.js`), readFile(`${dir}app.css`)]);
    return { html: HTML, script, style };
  } catch (err) {
    throw new FlockError(ErrorCode.BAD_OPTION, `the dashboard bundle is missing in ${dir}: run \`npm run build\`, or start with --no-http`, { cause: err });
  }
}
