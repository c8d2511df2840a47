// Conversions between wire bytes and the arrays the rest of the code works with.
import type { ModelState } from '../models/spec.js';
import { bytesToFloat32, float32ToBytes, float32ToHalfBytes, halfBytesInto } from '../tensor-codec.js';
import type { WirePrecision } from '../training/config.js';
import { bad } from './fields.js';
import type { WireState } from './messages.js';

export function stateToWire(state: ModelState, precision: WirePrecision = 'float32'): WireState {
  const buffers = state.buffers.map(float32ToBytes);
  if (precision === 'float16') {
    const half = halfTensors(state.params);
    if (half) return { params: half, buffers, half: true };
  }
  return { params: state.params.map(float32ToBytes), buffers };
}

export function wireToState(wire: WireState): ModelState {
  const params = wire.half ? wire.params.map((p) => {
    const out = new Float32Array(p.byteLength / 2);
    halfBytesInto(p, out);
    return out;
  }) : wire.params.map(bytesToFloat32);
  return { params, buffers: wire.buffers.map(bytesToFloat32) };
}

/** Tensors as binary16 bytes; undefined if any value is beyond binary16's range (send float32 then). */
export function halfTensors(tensors: readonly Float32Array[]): Uint8Array[] | undefined {
  const out: Uint8Array[] = [];
  for (const t of tensors) {
    const h = float32ToHalfBytes(t);
    if (!h) return undefined;
    out.push(h);
  }
  return out;
}

/** Whether this machine stores numbers little-endian (then typed arrays already hold wire bytes). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Index lists as Uint32 little-endian bytes (a copy, independent of the source's memory). */
export function indicesToBytes(indices: Uint32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(indices.slice().buffer);
  const out = new Uint8Array(indices.length * 4);
  const view = new DataView(out.buffer);
  indices.forEach((v, i) => view.setUint32(i * 4, v, true));
  return out;
}

export function bytesToIndices(b: Uint8Array): Uint32Array {
  if (b.byteLength % 4 !== 0) throw bad(`index list of ${b.byteLength} bytes is not a multiple of 4`);
  const out = new Uint32Array(b.byteLength / 4);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}

/** One byte per sample (1 = set) as a bitset: bit i is byte i >> 3, bit i & 7. */
export function flagsToBits(flags: Uint8Array): Uint8Array {
  const bits = new Uint8Array(Math.ceil(flags.length / 8));
  flags.forEach((f, i) => {
    if (f !== 0) bits[i >> 3]! |= 1 << (i & 7);
  });
  return bits;
}

/** A bitset over `count` samples as one byte per sample; its length must fit `count`. */
export function bitsToFlags(bits: Uint8Array, count: number): Uint8Array {
  if (bits.byteLength !== Math.ceil(count / 8)) throw bad(`a bitset over ${count} samples has ${Math.ceil(count / 8)} bytes, got ${bits.byteLength}`);
  const flags = new Uint8Array(count);
  for (let i = 0; i < count; i++) flags[i] = (bits[i >> 3]! >> (i & 7)) & 1;
  return flags;
}
