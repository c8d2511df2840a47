// What /join serves, read once at start: the page's bundle (`npm run build` puts it in
// dist/join/), tfjs-backend-wasm's three WebAssembly builds and Flock's kernels (two builds:
// for the single-threaded backend's memory, and for the threaded backend's shared memory).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLOCK_KERNELS_FILE, FLOCK_SHARED_KERNELS_FILE } from '../../shared/backends/kernels/flock_wasm_file.js';
import { pageHtml, readBundleFiles } from '../bundle-files.js';

export interface JoinAssets {
  readonly html: string;
  readonly script: Buffer;
  readonly style: Buffer;
  /** By file name, as the page asks for them under /join/wasm/. */
  readonly wasm: ReadonlyMap<string, Buffer>;
}

export const JOIN_BUNDLE_DIR = fileURLToPath(new URL('../../join/', import.meta.url));
const TFJS_WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'] as const;

const HTML = pageHtml({
  title: 'Flock worker', stylesheet: '/join/join.css', script: '/join/join.js',
  noscript: 'A Flock worker runs in JavaScript; this page needs it.', main: '<main id="join" data-state="loading"></main>',
});

export async function loadJoinAssets(dir = JOIN_BUNDLE_DIR): Promise<JoinAssets> {
  const { script, style, ...wasm } = await readBundleFiles(() => {
    const tfjsWasmDir = join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
    return {
      script: join(dir, 'join.js'), style: join(dir, 'join.css'),
      'flock_kernels.wasm': FLOCK_KERNELS_FILE, 'flock_kernels_shared.wasm': FLOCK_SHARED_KERNELS_FILE,
      ...Object.fromEntries(TFJS_WASM_FILES.map((f) => [f, join(tfjsWasmDir, f)])),
    };
  }, 'the browser worker\'s files are');
  return { html: HTML, script, style, wasm: new Map(Object.entries(wasm)) };
}
