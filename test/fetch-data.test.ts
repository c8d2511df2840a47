import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import pino from 'pino';
import { c as createTar } from 'tar';
import { extractArchive, fetchCifar } from '../coordinator/fetch-data.js';
import { createProgressBar, formatProgress } from '../coordinator/progress-bar.js';
import { CIFAR_FILES, loadCifar } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { isFlockError } from '../shared/errors.js';

const logger = pino({ level: 'silent' });

function isCode(code: string, ...parts: string[]): (err: unknown) => boolean {
  return (err) => {
    assert.ok(isFlockError(err), `expected FlockError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const p of parts) assert.ok(err.message.includes(p), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
    return true;
  };
}

void describe('fetchCifar against a local HTTP server', () => {
  let root: string;
  let archive: Buffer;
  let archivePath: string;
  /** The regular files of the archive's cifar-10-batches-bin/ (not the symlink). */
  let dataFiles: string[];
  let partial: Buffer;
  let md5: string;
  let server: Server;
  let base: string;
  let requests: string[];
  let parent: string;
  let target: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'flock-fetch-'));
    const src = join(root, 'src');
    await writeSyntheticCifar(join(src, 'cifar-10-batches-bin'), { trainPerFile: 20, testCount: 20, seed: 7 });
    // Beside the data: a file outside the folder, and a symlink inside it that points out of it.
    await writeFile(join(src, 'outside.txt'), 'not part of the data set');
    dataFiles = (await readdir(join(src, 'cifar-10-batches-bin'))).sort();
    assert.ok(CIFAR_FILES.every((f) => dataFiles.includes(f)));
    await symlink('../outside.txt', join(src, 'cifar-10-batches-bin', 'escape.txt'));
    archivePath = join(root, 'cifar-10-binary.tar.gz');
    await createTar({ gzip: true, file: archivePath, cwd: src }, ['cifar-10-batches-bin', 'outside.txt']);
    archive = await readFile(archivePath);
    md5 = createHash('md5').update(archive).digest('hex');
    const partialPath = join(root, 'partial.tar.gz');
    await createTar({ gzip: true, file: partialPath, cwd: src }, ['cifar-10-batches-bin/data_batch_1.bin']);
    partial = await readFile(partialPath);

    server = createServer((req, res) => {
      requests.push(req.url ?? '');
      const send = (body: Buffer): void => {
        res.writeHead(200, { 'content-type': 'application/x-gzip', 'content-length': body.length });
        res.end(body);
      };
      switch (req.url ?? '') {
        case '/cifar-10-binary.tar.gz': return send(archive);
        case '/partial.tar.gz': return send(partial);
        case '/drop':
          // Promise the whole archive, send half, then cut the connection.
          res.writeHead(200, { 'content-length': archive.length });
          res.write(archive.subarray(0, archive.length >> 1), () => res.destroy());
          return;
        default:
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found');
      }
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(async () => {
    requests = [];
    parent = await mkdtemp(join(root, 'parent-'));
    await writeFile(join(parent, 'keep.txt'), 'pre-existing');
    target = join(parent, 'cifar-10-batches-bin');
  });

  const untouched = async (): Promise<void> => assert.deepEqual(await readdir(parent), ['keep.txt']);

  void test('downloads, verifies, extracts, and the result loads', async () => {
    const progress: [number, number | undefined][] = [];
    const result = await fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5, logger, onProgress: (r, t) => progress.push([r, t]) });
    assert.deepEqual(result, { dir: target, downloaded: true, bytes: archive.length });
    assert.deepEqual((await readdir(parent)).sort(), ['cifar-10-batches-bin', 'keep.txt']);
    const { train, validation } = await loadCifar(target);
    assert.equal(train.count, 5 * 18);
    assert.equal(validation.count, 18);
    assert.ok(progress.length > 0);
    assert.deepEqual(progress.at(-1), [archive.length, archive.length]);

    // A complete folder is left alone: no request, no change.
    const before = (await stat(join(target, 'test_batch.bin'))).mtimeMs;
    const again = await fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5, logger });
    assert.equal(again.downloaded, false);
    assert.deepEqual(requests, ['/cifar-10-binary.tar.gz']);
    assert.equal((await stat(join(target, 'test_batch.bin'))).mtimeMs, before);
  });

  void test('extracts only the regular files of cifar-10-batches-bin/: outside.txt and the symlink are left out', async () => {
    const into = await mkdtemp(join(parent, 'extract-'));
    await extractArchive(archivePath, into);
    assert.deepEqual(await readdir(into), ['cifar-10-batches-bin']);
    const files = await readdir(join(into, 'cifar-10-batches-bin'));
    assert.ok(!files.includes('escape.txt'), 'the symlink was extracted');
    assert.deepEqual(files.sort(), dataFiles);
    // And through fetchCifar: nothing of outside.txt anywhere under the parent folder.
    await fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5, logger });
    assert.deepEqual((await readdir(target)).sort(), dataFiles);
    assert.ok(!(await readdir(parent, { recursive: true })).some((f) => f.endsWith('outside.txt') || f.endsWith('escape.txt')));
  });

  void test('creates missing parent folders, and removes them again on failure', async () => {
    const deep = join(parent, 'a', 'b', 'cifar-10-batches-bin');
    await assert.rejects(fetchCifar({ dir: deep, url: `${base}/missing`, logger }), isCode('ERR_DOWNLOAD_FAILED'));
    await untouched();
    await fetchCifar({ dir: deep, url: `${base}/cifar-10-binary.tar.gz`, md5, logger });
    assert.deepEqual(await readdir(join(parent, 'a', 'b')), ['cifar-10-batches-bin']);
  });

  void test('wrong checksum: ERR_CHECKSUM_MISMATCH and nothing left behind', async () => {
    const wrong = '0'.repeat(32);
    await assert.rejects(
      fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5: wrong, logger }),
      isCode('ERR_CHECKSUM_MISMATCH', wrong, md5, 'Retry', 'manually'),
    );
    await untouched();
  });

  void test('HTTP 404: ERR_DOWNLOAD_FAILED with the status and the offline hint', async () => {
    await assert.rejects(fetchCifar({ dir: target, url: `${base}/missing`, md5, logger }), isCode('ERR_DOWNLOAD_FAILED', '404', 'FLOCK_DATA_DIR'));
    await untouched();
  });

  void test('connection dropped mid-body: ERR_DOWNLOAD_FAILED and nothing left behind', async () => {
    await assert.rejects(fetchCifar({ dir: target, url: `${base}/drop`, md5, logger }), isCode('ERR_DOWNLOAD_FAILED', 'broke off'));
    await untouched();
  });

  void test('aborting mid-download rejects and leaves nothing behind', async () => {
    const abort = new AbortController();
    await assert.rejects(
      fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5, logger, signal: abort.signal, onProgress: () => abort.abort() }),
      isCode('ERR_DOWNLOAD_FAILED', 'abort'),
    );
    await untouched();
  });

  void test('connection refused: ERR_DOWNLOAD_FAILED', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    await assert.rejects(fetchCifar({ dir: target, url: `http://127.0.0.1:${port}/x.tar.gz`, logger }), isCode('ERR_DOWNLOAD_FAILED', 'ECONNREFUSED'));
    await untouched();
  });

  void test('archive without every batch file: ERR_DATA_CORRUPT and nothing left behind', async () => {
    const partialMd5 = createHash('md5').update(partial).digest('hex');
    await assert.rejects(fetchCifar({ dir: target, url: `${base}/partial.tar.gz`, md5: partialMd5, logger }), isCode('ERR_DATA_CORRUPT', 'data_batch_2.bin'));
    await untouched();
  });

  void test('an existing incomplete folder is reported and left untouched', async () => {
    await mkdir(target);
    await writeFile(join(target, 'data_batch_1.bin'), 'x');
    await assert.rejects(fetchCifar({ dir: target, url: `${base}/cifar-10-binary.tar.gz`, md5, logger }), isCode('ERR_DATA_CORRUPT', 'Remove it'));
    assert.deepEqual(await readdir(target), ['data_batch_1.bin']);
    assert.deepEqual(requests, []);
  });
});

void test('progress bar draws only on a TTY', () => {
  assert.equal(formatProgress(50 * 1024 * 1024, 100 * 1024 * 1024, 2000, { label: 'cifar', width: 10 }), 'cifar [#####-----]  50.0%  50.0/100.0 MB  25.0 MB/s');
  assert.equal(formatProgress(3 * 1024 * 1024, undefined, 1000), 'download 3.0 MB  3.0 MB/s');
  const written: string[] = [];
  let t = 0;
  const stream = (isTTY: boolean): { isTTY: boolean; write: (s: string) => boolean } => ({ isTTY, write: (s) => written.push(s) > 0 });
  const quiet = createProgressBar(stream(false));
  quiet.update(1, 2);
  quiet.done();
  assert.equal(written.length, 0);
  const bar = createProgressBar(stream(true), { now: () => t, intervalMs: 100 });
  bar.update(1, 4);
  t = 50;
  bar.update(2, 4); // throttled
  t = 200;
  bar.update(4, 4);
  bar.done();
  assert.equal(written.length, 4);
  assert.ok(written[1]?.includes('100.0%'));
  assert.equal(written.at(-1), '\n');
});
