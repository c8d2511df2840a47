// Downloads, verifies and installs the CIFAR-10 binary archive. Everything is written
// to temporary names next to the target and renamed into place only once complete, so
// an interrupted or failed fetch never leaves a half-written data folder behind.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Logger } from 'pino';
import { x as extractTar } from 'tar';
import { CIFAR_FILES, RECORD_BYTES } from '../shared/data/cifar.js';
import { definedOnly } from '../shared/defaults.js';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';

export const CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const CIFAR_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';
/** The folder inside the archive; nothing else in it is extracted. */
const ARCHIVE_FOLDER = 'cifar-10-batches-bin';

export interface FetchOptions {
  /** The final cifar-10-batches-bin folder. */
  readonly dir: string;
  readonly url?: string;
  readonly md5?: string;
  readonly logger: Logger;
  readonly fetch?: typeof globalThis.fetch;
  readonly onProgress?: ((received: number, total: number | undefined) => void) | undefined;
  /** Aborting (e.g. on Ctrl-C) stops the download and removes its temporary files. */
  readonly signal?: AbortSignal | undefined;
}

export interface FetchResult {
  readonly dir: string;
  /** False when the folder already held a complete dataset. */
  readonly downloaded: boolean;
  /** Archive bytes downloaded (0 when nothing was). */
  readonly bytes: number;
}

const DEFAULTS = { url: CIFAR_URL, md5: CIFAR_MD5, fetch: (...args: Parameters<typeof globalThis.fetch>) => globalThis.fetch(...args) };

const OFFLINE_HINT =
  'Check the network and retry. Offline, copy an extracted cifar-10-batches-bin folder to this machine and point FLOCK_DATA_DIR (or --data-dir) at it.';

function downloadFailed(message: string, cause?: unknown): FlockError {
  return new FlockError(ErrorCode.DOWNLOAD_FAILED, `${message}. ${OFFLINE_HINT}`, { cause });
}

/** Message of an error and of its cause (fetch reports "fetch failed" with the reason in `cause`). */
function describe(err: unknown): string {
  const cause = err instanceof Error ? err.cause : undefined;
  return cause === undefined ? errorMessage(err) : `${errorMessage(err)}: ${errorMessage(cause)}`;
}

type FolderState = { kind: 'absent' } | { kind: 'complete' } | { kind: 'incomplete'; problem: string };

/** Cheap structural check (files present, sizes whole records); loadCifar validates contents. */
async function inspectFolder(dir: string): Promise<FolderState> {
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) return { kind: 'incomplete', problem: 'it is not a directory' };
  } catch {
    return { kind: 'absent' };
  }
  if ((await readdir(dir)).length === 0) return { kind: 'absent' };
  for (const file of CIFAR_FILES) {
    try {
      const { size } = await stat(join(dir, file));
      if (size === 0 || size % RECORD_BYTES !== 0) return { kind: 'incomplete', problem: `${file} is ${size} bytes, not whole ${RECORD_BYTES}-byte records` };
    } catch {
      return { kind: 'incomplete', problem: `${file} is missing` };
    }
  }
  return { kind: 'complete' };
}

/** Streams `url` to `file`, hashing as it goes; returns the byte count and MD5. */
async function download(
  o: { url: string; fetch: typeof globalThis.fetch; onProgress?: FetchOptions['onProgress']; signal?: AbortSignal | undefined },
  file: string,
): Promise<{ bytes: number; md5: string }> {
  let res: Response;
  try {
    res = await o.fetch(o.url, { signal: o.signal });
  } catch (err) {
    throw downloadFailed(`could not download ${o.url} (${describe(err)})`, err);
  }
  if (!res.ok || res.body === null) {
    await res.body?.cancel();
    throw downloadFailed(`HTTP ${res.status} ${res.statusText} from ${o.url}`);
  }
  const header = Number(res.headers.get('content-length') ?? NaN);
  // With a content-encoding, fetch decodes the body and the header counts encoded bytes.
  const total = Number.isFinite(header) && res.headers.get('content-encoding') === null ? header : undefined;
  const hash = createHash('md5');
  let received = 0;
  const onProgress = o.onProgress;
  try {
    await pipeline(
      Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          received += chunk.length;
          onProgress?.(received, total);
          yield chunk;
        }
      },
      createWriteStream(file, { flags: 'wx' }),
      { signal: o.signal },
    );
  } catch (err) {
    throw downloadFailed(`download of ${o.url} broke off after ${received} of ${total ?? 'unknown'} bytes (${describe(err)})`, err);
  }
  if (total !== undefined && received !== total) {
    throw downloadFailed(`download of ${o.url} ended after ${received} of ${total} bytes`);
  }
  return { bytes: received, md5: hash.digest('hex') };
}

/** Extracts only regular files and folders under cifar-10-batches-bin/ into `into`. */
export async function extractArchive(archive: string, into: string): Promise<void> {
  const wanted = (path: string): boolean => path.replace(/^\.\//, '').startsWith(`${ARCHIVE_FOLDER}/`);
  try {
    await extractTar({
      file: archive,
      cwd: into,
      strict: true,
      filter: (path, entry) => wanted(path) && (!('type' in entry) || entry.type === 'File' || entry.type === 'Directory'),
    });
  } catch (err) {
    throw new FlockError(ErrorCode.DATA_CORRUPT, `the downloaded archive could not be extracted (${describe(err)}); retry the download.`, { cause: err });
  }
}

/** Removes `from` and its parents up to `upTo` while they are empty: folders this fetch created. */
async function removeEmptyDirs(from: string, upTo: string): Promise<void> {
  for (let d = from; ; d = dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      return;
    }
    if (d === upTo) return;
  }
}

/** Downloads CIFAR-10 into `opts.dir` unless it already holds the dataset. */
export async function fetchCifar(opts: FetchOptions): Promise<FetchResult> {
  const o = { ...DEFAULTS, ...(definedOnly(opts) as FetchOptions) };
  const target = resolve(o.dir);
  const log = o.logger;

  const existing = await inspectFolder(target);
  if (existing.kind === 'complete') {
    log.info({ event: 'fetch-data', dir: target }, `CIFAR-10 already present in ${target}; nothing to download`);
    return { dir: target, downloaded: false, bytes: 0 };
  }
  if (existing.kind === 'incomplete') {
    throw new FlockError(
      ErrorCode.DATA_CORRUPT,
      `${target} exists but is not a complete CIFAR-10 folder (${existing.problem}). Remove it or choose another --dir, then run fetch-data again.`,
    );
  }

  const parent = dirname(target);
  const createdParent = await mkdir(parent, { recursive: true });
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const archive = join(parent, `.${basename(target)}.${tag}.tar.gz.part`);
  let extractDir: string | undefined;
  let ok = false;
  try {
    log.info({ event: 'fetch-data', url: o.url, dir: target }, `downloading ${o.url}`);
    const started = performance.now();
    const { bytes, md5 } = await download(o, archive);
    if (md5 !== o.md5.toLowerCase()) {
      throw new FlockError(
        ErrorCode.CHECKSUM_MISMATCH,
        `MD5 of ${o.url} is ${md5}, expected ${o.md5} (${bytes} bytes received). Retry; if it persists, download the archive manually, ` +
          `check it with md5sum, and extract its ${ARCHIVE_FOLDER} folder to ${target}.`,
      );
    }
    const seconds = (performance.now() - started) / 1000;
    log.info({ event: 'fetch-data', bytes, seconds, md5 }, `downloaded ${(bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(1)} s; checksum ok`);

    extractDir = await mkdtemp(join(parent, `.${basename(target)}.extract-`));
    await extractArchive(archive, extractDir);
    const extracted = join(extractDir, ARCHIVE_FOLDER);
    const check = await inspectFolder(extracted);
    if (check.kind !== 'complete') {
      const problem = check.kind === 'absent' ? `it has no ${ARCHIVE_FOLDER} folder` : check.problem;
      throw new FlockError(ErrorCode.DATA_CORRUPT, `the downloaded archive is not the CIFAR-10 binary version: ${problem}. Check --url, then retry.`);
    }
    try {
      await rename(extracted, target);
    } catch (err) {
      // Another fetch may have finished first; its folder is as good as ours.
      if ((await inspectFolder(target)).kind !== 'complete') throw err;
      log.info({ event: 'fetch-data', dir: target }, `CIFAR-10 was installed in ${target} meanwhile; keeping that copy`);
    }
    ok = true;
    log.info({ event: 'fetch-data', dir: target }, `CIFAR-10 ready in ${target}`);
    return { dir: target, downloaded: true, bytes };
  } finally {
    await rm(archive, { force: true });
    if (extractDir !== undefined) await rm(extractDir, { recursive: true, force: true });
    if (!ok && createdParent !== undefined) await removeEmptyDirs(parent, createdParent);
  }
}
