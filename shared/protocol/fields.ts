// Field readers for `decode`: each checks one field of an `unknown` map and throws
// FlockError(ERR_PROTOCOL) naming the field, so nothing unchecked passes the trust boundary.
import { resolveTrainConfig, type TrainConfig } from '../training/config.js';
import { ErrorCode, FlockError, errorMessage } from '../errors.js';
import { IMAGE_BYTES, NUM_CLASSES } from '../models/layers.js';
import { MAX_CHARS } from './limits.js';
import type { DatasetInfo, HeldSamples, WireSamples, WireState, WireWork } from './messages.js';

export type Obj = Record<string, unknown>;

export function bad(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'number' || typeof v === 'boolean' ? String(v) : typeof v;
}

/** A plain msgpack map (msgpackr also yields class instances for odd bytes such as 0xc1). */
export function record(v: unknown, at: string): Obj {
  const proto: unknown = typeof v === 'object' && v !== null ? Object.getPrototypeOf(v) : undefined;
  if (proto !== Object.prototype && proto !== null) throw bad(`${at} must be a map, got ${describe(v)}`);
  return v as Obj;
}

export function uint(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${key} must be a non-negative integer, got ${describe(v)}`);
  return v;
}

export function num(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${key} must be a finite number, got ${describe(v)}`);
  return v;
}

/** Any number, NaN and ±Infinity included: a loss that diverged is data, not a protocol error. */
export function anyNumber(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number') throw bad(`${key} must be a number, got ${describe(v)}`);
  return v;
}

export function nonNegative(o: Obj, key: string): number {
  const v = num(o, key);
  if (v < 0) throw bad(`${key} must be >= 0, got ${v}`);
  return v;
}

export function bool(o: Obj, key: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw bad(`${key} must be a boolean, got ${describe(v)}`);
  return v;
}

export function str(o: Obj, key: string, maxLength: number): string {
  const v = o[key];
  if (typeof v !== 'string') throw bad(`${key} must be a string, got ${describe(v)}`);
  if (v.length > maxLength) throw bad(`${key} is longer than ${maxLength} characters`);
  return v;
}

export function bytes(v: unknown, at: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw bad(`${at} must be binary, got ${describe(v)}`);
  return v;
}

/** Float32 data: binary whose length is a multiple of 4. */
export function f32(v: unknown, at: string): Uint8Array {
  const b = bytes(v, at);
  if (b.byteLength % 4 !== 0) throw bad(`${at} has ${b.byteLength} bytes, not a multiple of 4 (Float32)`);
  return b;
}

/** Uint32 data: same rule as Float32. */
export const u32 = f32;

export function list<T>(o: Obj, key: string, item: (v: unknown, at: string) => T): T[] {
  const v = o[key];
  if (!Array.isArray(v)) throw bad(`${key} must be an array, got ${describe(v)}`);
  return v.map((x: unknown, i) => item(x, `${key}[${i}]`));
}

/** Float16 data: binary whose length is a multiple of 2. */
export function f16(v: unknown, at: string): Uint8Array {
  const b = bytes(v, at);
  if (b.byteLength % 2 !== 0) throw bad(`${at} has ${b.byteLength} bytes, not a multiple of 2 (Float16)`);
  return b;
}

/** An optional flag: absent (or null) is false. */
export function optionalBool(o: Obj, key: string): boolean {
  return o[key] === undefined || o[key] === null ? false : bool(o, key);
}

export function wireState(o: Obj): WireState {
  const half = optionalBool(o, 'half');
  return { params: list(o, 'params', half ? f16 : f32), buffers: list(o, 'buffers', f32), ...(half ? { half } : {}) };
}

export function workList(o: Obj, key: string): WireWork[] {
  const out = list(o, key, (x, at) => {
    const w = record(x, at);
    return { id: uint(w, 'id'), indices: u32(w.indices, `${at}.indices`) };
  });
  const ids = new Set(out.map((w) => w.id));
  if (ids.size !== out.length) throw bad(`${key} repeats an id`);
  return out;
}

export function samples(v: unknown): WireSamples {
  const s = record(v, 'samples');
  const indices = u32(s.indices, 'samples.indices');
  const images = bytes(s.images, 'samples.images');
  const labels = bytes(s.labels, 'samples.labels');
  const n = indices.byteLength / 4;
  if (labels.byteLength !== n) throw bad(`samples has ${n} indices but ${labels.byteLength} labels`);
  if (images.byteLength !== n * IMAGE_BYTES) throw bad(`samples has ${n} indices but ${images.byteLength} image bytes (expected ${n * IMAGE_BYTES})`);
  for (const label of labels) if (label >= NUM_CLASSES) throw bad(`samples has label ${label}, but there are ${NUM_CLASSES} classes`);
  return { indices, images, labels };
}

const HASH = /^[0-9a-f]{64}$/;

export function datasetInfo(v: unknown, at: string): DatasetInfo {
  const o = record(v, at);
  const train = str(o, 'train', MAX_CHARS.hash);
  const validation = str(o, 'validation', MAX_CHARS.hash);
  if (!HASH.test(train) || !HASH.test(validation)) throw bad(`${at} must hold sha256 hex digests`);
  return { train, validation };
}

export function heldSamples(v: unknown): HeldSamples {
  const o = record(v, 'held');
  return { hashes: datasetInfo(o.hashes, 'held.hashes'), train: bytes(o.train, 'held.train'), validation: bytes(o.validation, 'held.validation') };
}

export function trainConfig(v: unknown): TrainConfig {
  const o = record(v, 'config');
  try {
    return resolveTrainConfig(o, 1);
  } catch (err) {
    throw bad(`config: ${errorMessage(err)}`);
  }
}
