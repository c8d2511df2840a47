// Float32 tensors as raw little-endian bytes: the one representation weights and
// gradients take on the wire and on disk (never JS number arrays). Float16 bytes are the
// opt-in lossy wire format (--wire-precision float16).
import { getFloat16, setFloat16 } from '@petamoriken/float16';

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The bytes of `values`, little-endian. Shares memory with `values` on little-endian hosts. */
export function float32ToBytes(values: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

/** A fresh, aligned Float32Array from little-endian bytes; throws if the length is not a multiple of 4. */
export function bytesToFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new RangeError(`float32 data of ${bytes.byteLength} bytes is not a multiple of 4`);
  const out = new Float32Array(bytes.byteLength / 4);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  }
  return out;
}

/** Little-endian Float32 bytes into `target` (same length), aligned whatever the bytes' offset. */
export function float32Into(bytes: Uint8Array, target: Float32Array): void {
  if (bytes.byteLength !== target.byteLength) throw new RangeError(`float32 data of ${bytes.byteLength} bytes into ${target.length} values`);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(target.buffer, target.byteOffset, target.byteLength).set(bytes);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < target.length; i++) target[i] = view.getFloat32(i * 4, true);
  }
}

/** Largest finite IEEE binary16 value. */
const HALF_MAX = 65504;

/**
 * `values` as IEEE binary16 little-endian bytes (round to nearest even): the opt-in lossy wire
 * format. Undefined when a finite value lies beyond binary16's range (it would become
 * Infinity): the caller then sends float32.
 */
export function float32ToHalfBytes(values: Float32Array): Uint8Array | undefined {
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (Math.abs(v) > HALF_MAX && Number.isFinite(v)) return undefined;
    setFloat16(view, i * 2, v, true);
  }
  return out;
}

/** IEEE binary16 little-endian bytes into `target` (same count), as float32. */
export function halfBytesInto(bytes: Uint8Array, target: Float32Array): void {
  if (bytes.byteLength !== target.length * 2) throw new RangeError(`float16 data of ${bytes.byteLength} bytes into ${target.length} values`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < target.length; i++) target[i] = getFloat16(view, i * 2, true);
}

/**
 * Whether every value of `g` is finite (v·0 is 0 for finite v, NaN otherwise); with `acc`
 * (same length), also acc += g element by element in float32, in the same pass (the step's
 * sum: the hottest loop of a step). Four independent probes and four additions an iteration:
 * one running probe is a chain of dependent additions that bounds the loop's speed.
 */
export function finiteInto(g: Float32Array, acc?: Float32Array): boolean {
  const n = g.length;
  let z0 = 0;
  let z1 = 0;
  let z2 = 0;
  let z3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const a = g[i]!;
    const b = g[i + 1]!;
    const c = g[i + 2]!;
    const d = g[i + 3]!;
    if (acc !== undefined) {
      acc[i]! += a;
      acc[i + 1]! += b;
      acc[i + 2]! += c;
      acc[i + 3]! += d;
    }
    z0 += a * 0;
    z1 += b * 0;
    z2 += c * 0;
    z3 += d * 0;
  }
  for (; i < n; i++) {
    const v = g[i]!;
    if (acc !== undefined) acc[i]! += v;
    z0 += v * 0;
  }
  return z0 + z1 + z2 + z3 === 0;
}

export function allFinite(values: Float32Array): boolean {
  return finiteInto(values);
}
