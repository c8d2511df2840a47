// The pages the coordinator serves from files the build makes (the dashboard's and /join's
// bundles, WebAssembly builds): the HTML shell both pages share, and one loader that reads a
// page's files once at start and, when one is missing, says how to get it.
import { readFile } from 'node:fs/promises';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';

export interface PageShell {
  readonly title: string;
  readonly stylesheet: string;
  readonly script: string;
  /** What a browser without JavaScript shows. */
  readonly noscript: string;
  /** The element the script fills. */
  readonly main: string;
}

export function pageHtml(p: PageShell): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${p.title}</title>
<link rel="stylesheet" href="${p.stylesheet}">
<script type="module" src="${p.script}"></script>
</head>
<body>
<noscript>${p.noscript}</noscript>
${p.main}
</body>
</html>
`;
}

/**
 * Reads every file of `files` (name -> path, or a function giving them, which may throw when a
 * package is missing); `what` names them in the error a missing one raises.
 */
export async function readBundleFiles<K extends string>(files: Readonly<Record<K, string | URL>> | (() => Readonly<Record<K, string | URL>>), what: string): Promise<Record<K, Buffer>> {
  try {
    const paths = typeof files === 'function' ? files() : files;
    const names = Object.keys(paths) as K[];
    const contents = await Promise.all(names.map((k) => readFile(paths[k])));
    return Object.fromEntries(names.map((k, i) => [k, contents[i]!])) as Record<K, Buffer>;
  } catch (err) {
    throw new FlockError(ErrorCode.BAD_OPTION, `${what} missing (${errorMessage(err)}): run \`npm run build\`, or start with --no-http`, { cause: err });
  }
}
