// The wire protocol: every message survives encode/decode, and decode rejects anything
// malformed with ERR_PROTOCOL (or ERR_PROTOCOL_VERSION) instead of passing it on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Packr } from 'msgpackr';
import { TRAIN_DEFAULTS, type TrainConfig } from '../shared/training/config.js';
import { ErrorCode, FlockError, isFlockError } from '../shared/errors.js';
import { IMAGE_BYTES } from '../shared/models/layers.js';
import {
  CloseCode, MessageType, PROTOCOL_VERSION, bytesToIndices, closeCodeFor, closeReason, decode, encode, encodeWeights, encodeWithWeights, errorOfClose, halfTensors, indicesToBytes,
  stateToWire, wireToState,
  type AssignMessage, type CoordinatorMessage, type EvaluateMessage, type WorkerMessage,
} from '../shared/protocol.js';
import { float32ToBytes, float32ToHalfBytes, halfBytesInto } from '../shared/tensor-codec.js';

const raw = new Packr({ useRecords: false, moreTypes: false });
const f32 = (...v: number[]): Uint8Array => float32ToBytes(new Float32Array(v));
const HASH = 'a'.repeat(64);
const config: TrainConfig = { ...TRAIN_DEFAULTS, microBatch: 16 };
const samples = { indices: indicesToBytes(new Uint32Array([3, 9])), images: new Uint8Array(2 * IMAGE_BYTES).fill(7), labels: new Uint8Array([0, 1]) };

const workerMessages: WorkerMessage[] = [
  { type: MessageType.HELLO, name: 'w1', backend: 'cpu', adapter: 'CPU: test' },
  { type: MessageType.HELLO, name: 'w2', backend: 'wasm', adapter: 'CPU: test', dataHashes: { train: HASH, validation: 'b'.repeat(64) } },
  {
    type: MessageType.GRADIENT, step: 7, microBatch: 2, grads: [f32(1, 2, 3), f32(-0.5)], lossSum: 3.25, correct: 5, count: 8,
    batchStats: [{ mean: f32(0.1, 0.2), variance: f32(1, 2) }], computeMs: 12.5,
  },
  {
    type: MessageType.GRADIENT, step: 7, microBatch: 3, grads: [new Uint8Array(6), new Uint8Array(2)], half: true, lossSum: 3.25, correct: 5, count: 8,
    batchStats: [], computeMs: 12.5,
  },
  { type: MessageType.EVALUATION, requestId: 3, chunk: 1, lossSum: 10.5, correct: 40, count: 50, computeMs: 4 },
  { type: MessageType.FAILURE, code: 'ERR_BACKEND_UNAVAILABLE', message: 'kernel missing' },
];

const coordinatorMessages: CoordinatorMessage[] = [
  {
    type: MessageType.WELCOME, workerId: 4, config, heartbeatMs: 5000, hashes: { train: HASH, validation: HASH }, counts: { train: 100, validation: 20 },
    localData: { train: true, validation: false }, weights: { version: 0, params: [f32(1, 2)], buffers: [] },
  },
  { type: MessageType.WELCOME, workerId: 5, config, heartbeatMs: 5000, hashes: { train: HASH, validation: HASH }, counts: { train: 1, validation: 1 }, localData: { train: false, validation: false } },
  { type: MessageType.ASSIGN, epoch: 1, step: 12, weightsVersion: 12, microBatches: [{ id: 0, indices: indicesToBytes(new Uint32Array([3, 9])) }], samples },
  {
    type: MessageType.ASSIGN, epoch: 1, step: 12, weightsVersion: 12, microBatches: [{ id: 0, indices: indicesToBytes(new Uint32Array([3, 9])) }], samples,
    weights: { version: 12, params: [f32(1), f32(2, 3)], buffers: [f32(0)] },
  },
  { type: MessageType.EVALUATE, requestId: 2, weightsVersion: 12, split: 'validation', chunks: [{ id: 0, indices: indicesToBytes(new Uint32Array([1])) }], samples },
  {
    type: MessageType.EVALUATE, requestId: 2, weightsVersion: 12, split: 'validation', chunks: [{ id: 0, indices: indicesToBytes(new Uint32Array([1])) }], samples,
    weights: { version: 12, params: [f32(1)], buffers: [] },
  },
  {
    type: MessageType.ASSIGN, epoch: 1, step: 12, weightsVersion: 12, microBatches: [{ id: 0, indices: indicesToBytes(new Uint32Array([3, 9])) }], samples,
    weights: { version: 12, params: [new Uint8Array(2), new Uint8Array(6)], buffers: [f32(0)], half: true },
  },
  { type: MessageType.STOP, reason: 'training complete' },
];

/** Plain-object view for deep comparison (Buffers and Uint8Arrays compare by content). */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return [...v];
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

function frame(fields: Record<string, unknown>): Uint8Array {
  return raw.pack({ v: PROTOCOL_VERSION, ...fields });
}

function rejects(data: Uint8Array, from: 'worker' | 'coordinator', pattern: RegExp, code: ErrorCode = ErrorCode.PROTOCOL): void {
  assert.throws(() => (from === 'worker' ? decode(data, 'worker') : decode(data, 'coordinator')), (err: unknown) => {
    assert.ok(isFlockError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

const goodGradient = { t: MessageType.GRADIENT, step: 1, microBatch: 0, grads: [f32(1)], lossSum: 1, correct: 1, count: 2, batchStats: [], computeMs: 1 };

void describe('protocol', () => {
  void it('numbers every message type uniquely and keeps close codes in 4000-4999', () => {
    const types = Object.values(MessageType);
    assert.equal(new Set(types).size, types.length);
    for (const code of Object.values(CloseCode)) assert.ok(code >= 4000 && code <= 4999);
  });

  void it('round-trips every worker message', () => {
    for (const m of workerMessages) assert.deepEqual(plain(decode(encode(m), 'worker')), plain(m), `type ${m.type}`);
  });

  void it('round-trips every coordinator message', () => {
    for (const m of coordinatorMessages) assert.deepEqual(plain(decode(encode(m), 'coordinator')), plain(m), `type ${m.type}`);
  });

  void it('encodes shared weights once: the two parts of an assign or evaluate are the whole frame', () => {
    const concat = (parts: Uint8Array[]): Uint8Array => Uint8Array.from(parts.flatMap((p) => [...p]));
    const weights = { version: 12, params: [f32(1), f32(2, 3)], buffers: [f32(0)] };
    const shared = encodeWeights(weights);
    for (const m of coordinatorMessages) {
      if ((m.type !== MessageType.ASSIGN && m.type !== MessageType.EVALUATE) || m.weights) continue;
      const parts = encodeWithWeights(m, shared);
      assert.equal(parts[1], shared.field, 'the weights part is the shared bytes themselves');
      const expected: AssignMessage | EvaluateMessage = { ...m, weights };
      assert.deepEqual(plain(decode(concat(parts), 'coordinator')), plain(expected), `type ${m.type}`);
      assert.deepEqual([...concat(parts)], [...encode(expected)], 'the same bytes as encoding the whole message');
    }
    const assign = coordinatorMessages.find((m) => m.type === MessageType.ASSIGN)!;
    assert.throws(() => encodeWithWeights({ ...(assign), weightsVersion: 3 }, shared), /version 12 attached to work at version 3/);
  });

  void it('float16 on the wire (opt-in, lossy): round to nearest, exact for values binary16 holds; float32 when a value is out of its range', () => {
    const values = Float32Array.of(0, -0, 1, -2.5, 65504, 1 / 3, 1e-8, Number.POSITIVE_INFINITY, Number.NaN);
    const half = float32ToHalfBytes(values)!;
    assert.equal(half.byteLength, values.length * 2);
    const back = new Float32Array(values.length);
    halfBytesInto(half, back);
    assert.deepEqual([...back.subarray(0, 5)], [0, -0, 1, -2.5, 65504]);
    assert.ok(Math.abs(back[5]! - 1 / 3) < 2e-4 && back[5] !== values[5], '1/3 rounds to the nearest binary16');
    assert.equal(back[6], 0, 'below the smallest subnormal: 0');
    assert.equal(back[7], Number.POSITIVE_INFINITY);
    assert.ok(Number.isNaN(back[8]));
    assert.equal(float32ToHalfBytes(Float32Array.of(1, 70000)), undefined);
    assert.equal(halfTensors([Float32Array.of(1), Float32Array.of(-1e6)]), undefined);
    const state = { params: [Float32Array.of(0.5, 3)], buffers: [Float32Array.of(1 / 3)] };
    const wire = stateToWire(state, 'float16');
    assert.equal(wire.half, true);
    assert.equal(wire.params[0]!.byteLength, 4);
    assert.deepEqual(wireToState(wire), { params: [Float32Array.of(0.5, 3)], buffers: [Float32Array.of(1 / 3)] }, 'buffers stay float32');
    assert.equal(stateToWire({ params: [Float32Array.of(1e9)], buffers: [] }, 'float16').half, undefined, 'out of range: float32');
  });

  void it('carries tensors as raw bytes, not number arrays', () => {
    const m = decode(encode(workerMessages[2]!), 'worker');
    assert.equal(m.type, MessageType.GRADIENT);
    if (m.type === MessageType.GRADIENT) assert.ok(m.grads[0] instanceof Uint8Array);
  });

  void it('round-trips index lists as Uint32 little-endian', () => {
    const idx = new Uint32Array([0, 1, 0xffffffff, 123456]);
    const b = indicesToBytes(idx);
    assert.deepEqual([...b.subarray(8, 12)], [255, 255, 255, 255]);
    assert.deepEqual([...b.subarray(12, 16)], [0x40, 0xe2, 0x01, 0x00]);
    assert.deepEqual(bytesToIndices(b), idx);
  });

  void it('rejects garbage and non-map frames', () => {
    rejects(new Uint8Array([0xc1]), 'worker', /frame must be a map/);
    rejects(new Uint8Array([0x81, 0xa1, 0x76, 1, 5]), 'worker', /not a msgpack frame/);
    rejects(new Uint8Array(0), 'worker', /not a msgpack frame/);
    rejects(raw.pack([1, 2, 3]), 'worker', /frame must be a map/);
    rejects(raw.pack('hello'), 'coordinator', /frame must be a map/);
  });

  void it('rejects a wrong or missing protocol version with ERR_PROTOCOL_VERSION', () => {
    rejects(raw.pack({ v: PROTOCOL_VERSION + 1, t: MessageType.HELLO, name: 'x', backend: 'cpu' }), 'worker', new RegExp(`protocol version ${PROTOCOL_VERSION + 1}, expected ${PROTOCOL_VERSION}`), ErrorCode.PROTOCOL_VERSION);
    rejects(raw.pack({ t: MessageType.HELLO, name: 'x', backend: 'cpu' }), 'worker', /protocol version undefined/, ErrorCode.PROTOCOL_VERSION);
  });

  void it('rejects message types from the wrong direction or unknown', () => {
    rejects(encode(coordinatorMessages.at(-1)!), 'worker', /type 8 is not one a worker sends/);
    rejects(frame({ t: 3, version: 1, params: [], buffers: [] }), 'coordinator', /type 3 is not one the coordinator sends/);
    rejects(encode(workerMessages[0]!), 'coordinator', /type 1 is not one the coordinator sends/);
    rejects(frame({ t: 99 }), 'worker', /type 99/);
    rejects(frame({ t: 'hello' }), 'worker', /type string/);
  });

  void it('rejects wrong field types', () => {
    rejects(frame({ t: MessageType.HELLO, name: 5, backend: 'cpu', adapter: 'a' }), 'worker', /name must be a string/);
    rejects(frame({ t: MessageType.HELLO, name: 'x', backend: 'cpu' }), 'worker', /adapter must be a string/);
    rejects(frame({ t: MessageType.HELLO, name: 'x', backend: 'cpu', adapter: 'a'.repeat(301) }), 'worker', /adapter is longer than 300/);
    rejects(frame({ t: MessageType.HELLO, name: 'x', backend: 'cpu', adapter: 'a', dataHashes: { train: 'nothex', validation: HASH } }), 'worker', /sha256/);
    rejects(frame({ ...goodGradient, step: -1 }), 'worker', /step must be a non-negative integer/);
    rejects(frame({ ...goodGradient, step: 1.5 }), 'worker', /step must be a non-negative integer/);
    rejects(frame({ ...goodGradient, lossSum: 'x' }), 'worker', /lossSum must be a number/);
    // Protocol 2: a diverged loss is data (the coordinator's guards judge it), not a violation.
    for (const lossSum of [NaN, Infinity, -Infinity]) assert.ok(Object.is((decode(frame({ ...goodGradient, lossSum }), 'worker') as { lossSum: number }).lossSum, lossSum));
    rejects(frame({ ...goodGradient, grads: f32(1) }), 'worker', /grads must be an array/);
    rejects(frame({ ...goodGradient, grads: [[1, 2, 3]] }), 'worker', /grads\[0\] must be binary, got an array/);
    rejects(frame({ ...goodGradient, correct: 3 }), 'worker', /correct 3 exceeds count 2/);
    rejects(frame({ ...goodGradient, computeMs: -1 }), 'worker', /computeMs must be >= 0/);
    rejects(frame({ t: MessageType.EVALUATE, requestId: 1, weightsVersion: 0, split: 'test', chunks: [], samples }), 'coordinator', /split/);
    rejects(frame({ t: MessageType.WELCOME, workerId: 1, config: { ...config, model: 'resnet' }, heartbeatMs: 1, hashes: { train: HASH, validation: HASH }, counts: { train: 1, validation: 1 }, localData: { train: false, validation: false } }), 'coordinator', /config: unknown model/);
  });

  void it('rejects byte lengths that do not fit the element type', () => {
    rejects(frame({ ...goodGradient, grads: [new Uint8Array(5)] }), 'worker', /grads\[0\] has 5 bytes, not a multiple of 4/);
    rejects(frame({ ...goodGradient, grads: [new Uint8Array(6)] }), 'worker', /grads\[0\] has 6 bytes, not a multiple of 4/);
    rejects(frame({ ...goodGradient, half: true, grads: [new Uint8Array(3)] }), 'worker', /grads\[0\] has 3 bytes, not a multiple of 2 \(Float16\)/);
    rejects(frame({ ...goodGradient, half: 1 }), 'worker', /half must be a boolean/);
    rejects(frame({ ...goodGradient, batchStats: [{ mean: new Uint8Array(4), variance: new Uint8Array(3) }] }), 'worker', /batchStats\[0\]\.variance has 3 bytes/);
    const chunk = [{ id: 0, indices: indicesToBytes(new Uint32Array([1])) }];
    const assign = { t: MessageType.ASSIGN, epoch: 0, step: 0, weightsVersion: 0, microBatches: chunk };
    rejects(frame({ ...assign, samples, weights: { version: 0, params: [new Uint8Array(6)], buffers: [] } }), 'coordinator', /params\[0\] has 6 bytes/);
    rejects(frame({ ...assign, samples, weights: { version: 1, params: [], buffers: [] } }), 'coordinator', /weights\.version 1 differs from weightsVersion 0/);
    rejects(frame({ ...assign, samples, weights: f32(1) }), 'coordinator', /weights must be a map/);
    rejects(frame({ ...assign, samples: { ...samples, indices: new Uint8Array(7) } }), 'coordinator', /samples\.indices has 7 bytes/);
    rejects(frame({ ...assign, samples: { ...samples, images: new Uint8Array(IMAGE_BYTES) } }), 'coordinator', /expected 6144/);
    rejects(frame({ ...assign, samples: { ...samples, labels: new Uint8Array([0]) } }), 'coordinator', /2 indices but 1 labels/);
    rejects(frame({ ...assign, samples: { ...samples, labels: new Uint8Array([0, 9]) } }), 'coordinator', /label 9/);
    rejects(frame({ ...assign, microBatches: [...chunk, ...chunk], samples }), 'coordinator', /repeats an id/);
  });

  void it('maps errors to close codes and back only through the edge helpers', () => {
    assert.equal(closeCodeFor(new FlockError(ErrorCode.BAD_GRADIENT, 'x')), CloseCode.BAD_GRADIENT);
    assert.equal(closeCodeFor(new FlockError(ErrorCode.PROTOCOL_VERSION, 'x')), CloseCode.PROTOCOL_VERSION);
    assert.equal(closeCodeFor(new Error('boom')), CloseCode.INTERNAL);
    assert.equal(errorOfClose(CloseCode.PROTOCOL_VERSION, 'old')?.code, ErrorCode.PROTOCOL_VERSION);
    assert.equal(errorOfClose(1000, ''), undefined);
    assert.ok(new TextEncoder().encode(closeReason('é'.repeat(200))).byteLength <= 123);
  });
});
