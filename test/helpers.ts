// Shared test fixtures: a silent logger, temporary folders, synthetic data and backends.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { BackendName, ComputeBackend } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';

export const silentLogger = (): Logger => pino({ level: 'silent' });

export async function withTempDir<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'flock-test-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The fastest pure-JS backend for tests that train (wasm with Flock's kernels). */
export function trainingBackend(): Promise<ComputeBackend> {
  return loadBackend('wasm', silentLogger());
}

export function backend(name: BackendName): Promise<ComputeBackend> {
  return loadBackend(name, silentLogger());
}
