// Shared test fixtures: a silent logger, temporary folders, synthetic data and backends.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import pino, { type Logger } from 'pino';
import type { BackendName, ComputeBackend } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { writeSyntheticCifar, type SyntheticOptions } from '../shared/data/synthetic.js';

export const silentLogger = (): Logger => pino({ level: 'silent' });

export async function withTempDir<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'flock-test-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Registers the suite's hooks: before it, a fresh temporary folder `root` with a synthetic
 * CIFAR-10 copy in `dataDir` (root/cifar-10-batches-bin); after it, the folder removed. The
 * returned object is filled in by the time the first test runs.
 */
export function useSyntheticCifar(prefix: string, synthetic: Partial<SyntheticOptions>): { readonly root: string; readonly dataDir: string } {
  const made = { root: '', dataDir: '' };
  before(async () => {
    made.root = await mkdtemp(join(tmpdir(), prefix));
    made.dataDir = join(made.root, 'cifar-10-batches-bin');
    await writeSyntheticCifar(made.dataDir, synthetic);
  });
  after(() => (made.root ? rm(made.root, { recursive: true, force: true }) : undefined));
  return made;
}

/** The fastest pure-JS backend for tests that train (wasm with Flock's kernels). */
export function trainingBackend(): Promise<ComputeBackend> {
  return loadBackend('wasm', silentLogger());
}

export function backend(name: BackendName): Promise<ComputeBackend> {
  return loadBackend(name, silentLogger());
}
