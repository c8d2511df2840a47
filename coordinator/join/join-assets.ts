// What /join serves, read once at start: the page's bundle (`npm run build` puts it in
// dist/join/), tfjs-backend-wasm's three WebAssembly builds and Flock's kernels (two builds:
// for the single-threaded backend's memory, and for the threaded backend's shared memory).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, FlockError } from '../../shared/errors.js';
import { FLOCK_KERNELS_FILE, FLOCK_SHARED_KERNELS_FILE } from '../../shared/backends/kernels/flock_wasm_file.js';

export interface JoinAssets {
  readonly html: string;
  readonly script: Buffer;
  readonly style: Buffer;
  /** By file name, as the page asks for them under /join/wasm/. */
  readonly wasm: ReadonlyMap<string, Buffer>;
}

export const JOIN_BUNDLE_DIR = fileURLToPath(new URL('../../join/', import.meta.url));
const TFJS_WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'] as const;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flock worker</title>
<link rel="stylesheet" href="/join/join.css">
<script type="module" src="/join/join.js"></script>
</head>
<body>
<noscript>A Flock worker runs in JavaScript; this page needs it.</noscript>
<main id="join" data-state="loading"></main>
</body>
</html>
`;

export async function loadJoinAssets(dir = JOIN_BUNDLE_DIR): Promise<JoinAssets> {
  try {
    const tfjsWasmDir = join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
    const [script, style, kernels, sharedKernels, ...tfjsWasm] = await Promise.all([
      readFile(join(dir, 'join.js')), readFile(join(dir, 'join.css')), readFile(FLOCK_KERNELS_FILE), readFile(FLOCK_SHARED_KERNELS_FILE),
      ...TFJS_WASM_FILES.map((f) => readFile(join(tfjsWasmDir, f))),
    ]);
    const wasm = new Map<string, Buffer>(TFJS_WASM_FILES.map((f, i) => [f, tfjsWasm[i]!]));
    wasm.set('flock_kernels.wasm', kernels);
    wasm.set('flock_kernels_shared.wasm', sharedKernels);
    return { html: HTML, script, style, wasm };
  } catch (err) {
    throw new FlockError(ErrorCode.BAD_OPTION, `the browser worker's files are missing (${err instanceof Error ? err.message : String(err)}): run \`npm run build\`, or start with --no-http`, { cause: err });
  }
}
