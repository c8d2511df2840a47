// The coordinator <-> worker wire protocol: every message, its number, the close codes,
// and the one encode/decode pair. Frames are msgpack maps {v, t, ...fields}; tensors are
// raw little-endian Float32 bytes, images raw uint8, index lists raw little-endian Uint32,
// so nothing large ever becomes a JS number array. `decode` is the trust boundary: it
// checks every field of an `unknown` value and throws FlockError(ERR_PROTOCOL) with a
// reason; checks that need the model (parameter shapes, finite values) happen at the
// receiver, which knows the model.
import { Packr } from 'msgpackr';
import type { TrainConfig } from './training/config.js';
import { resolveTrainConfig } from './training/config.js';
import { ErrorCode, FlockError, errorMessage } from './errors.js';
import { IMAGE_BYTES, NUM_CLASSES } from './models/layers.js';
import type { ModelState } from './models/spec.js';
import { bytesToFloat32, float32ToBytes } from './tensor-codec.js';

export const PROTOCOL_VERSION = 1;

export const MessageType = {
  /** worker -> coordinator: first frame of every connection. */
  HELLO: 1,
  /** coordinator -> worker: accepted; run config, dataset identity, current weights. */
  WELCOME: 2,
  /** coordinator -> worker: weights for a version (= global step). */
  WEIGHTS: 3,
  /** coordinator -> worker: micro-batches to compute gradients of, with samples not yet sent. */
  ASSIGN: 4,
  /** worker -> coordinator: gradient sum and statistics of one micro-batch. */
  GRADIENT: 5,
  /** coordinator -> worker: chunks to evaluate, with samples not yet sent. */
  EVALUATE: 6,
  /** worker -> coordinator: loss and accuracy of one chunk. */
  EVALUATION: 7,
  /** coordinator -> worker: training is over (or the coordinator shuts down); exit. */
  STOP: 8,
  /** worker -> coordinator: this worker cannot compute (e.g. a backend error) and is leaving. */
  FAILURE: 9,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Application close codes (4000-4999). Normal shutdown uses the standard 1000. */
export const CloseCode = {
  PROTOCOL: 4000,
  PROTOCOL_VERSION: 4001,
  UNAUTHORIZED: 4002,
  BAD_GRADIENT: 4003,
  TIMEOUT: 4004,
  MODEL_MISMATCH: 4005,
  DATA: 4006,
  BACKEND: 4007,
  SHUTDOWN: 4008,
  INTERNAL: 4999,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The standard WebSocket "normal closure". */
export const NORMAL_CLOSURE = 1000;

// ---- messages ----------------------------------------------------------------------------

/** Float32 tensors as raw little-endian bytes, in the model's parameter/buffer order. */
export interface WireState {
  readonly params: Uint8Array[];
  readonly buffers: Uint8Array[];
}

/** A micro-batch or evaluation chunk: its id and sample indices (Uint32 LE bytes). */
export interface WireWork {
  readonly id: number;
  readonly indices: Uint8Array;
}

/** Samples shipped with a piece of work: indices (Uint32 LE), NHWC images, labels. */
export interface WireSamples {
  readonly indices: Uint8Array;
  readonly images: Uint8Array;
  readonly labels: Uint8Array;
}

export interface DatasetInfo {
  readonly train: string;
  readonly validation: string;
}

export type SplitName = 'train' | 'validation';

export interface HelloMessage {
  readonly type: typeof MessageType.HELLO;
  readonly name: string;
  readonly backend: string;
  /** datasetHash of the worker's local copy, if it has one. */
  readonly dataHashes?: DatasetInfo;
}

export interface WelcomeMessage {
  readonly type: typeof MessageType.WELCOME;
  readonly workerId: number;
  readonly config: TrainConfig;
  /** The coordinator pings this often; silence for several intervals means it is gone. */
  readonly heartbeatMs: number;
  readonly hashes: DatasetInfo;
  readonly counts: { readonly train: number; readonly validation: number };
  /** Splits the worker reads from its own copy (its hash matched), so no samples are sent. */
  readonly localData: { readonly train: boolean; readonly validation: boolean };
  /** Current weights, when the coordinator has any yet. */
  readonly weights?: { readonly version: number } & WireState;
}

export interface WeightsMessage extends WireState {
  readonly type: typeof MessageType.WEIGHTS;
  readonly version: number;
}

export interface AssignMessage {
  readonly type: typeof MessageType.ASSIGN;
  readonly epoch: number;
  readonly step: number;
  readonly weightsVersion: number;
  readonly microBatches: WireWork[];
  readonly samples: WireSamples;
}

export interface GradientMessage {
  readonly type: typeof MessageType.GRADIENT;
  readonly step: number;
  readonly microBatch: number;
  /** Gradient of the summed loss, one Float32 LE tensor per parameter. */
  readonly grads: Uint8Array[];
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  /** Per batch-norm layer: micro-batch mean and biased variance, Float32 LE. */
  readonly batchStats: { readonly mean: Uint8Array; readonly variance: Uint8Array }[];
  readonly computeMs: number;
}

export interface EvaluateMessage {
  readonly type: typeof MessageType.EVALUATE;
  readonly requestId: number;
  readonly weightsVersion: number;
  readonly split: SplitName;
  readonly chunks: WireWork[];
  readonly samples: WireSamples;
}

export interface EvaluationMessage {
  readonly type: typeof MessageType.EVALUATION;
  readonly requestId: number;
  readonly chunk: number;
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  readonly computeMs: number;
}

export interface StopMessage {
  readonly type: typeof MessageType.STOP;
  readonly reason: string;
}

export interface FailureMessage {
  readonly type: typeof MessageType.FAILURE;
  readonly code: string;
  readonly message: string;
}

export type WorkerMessage = HelloMessage | GradientMessage | EvaluationMessage | FailureMessage;
export type CoordinatorMessage = WelcomeMessage | WeightsMessage | AssignMessage | EvaluateMessage | StopMessage;
export type Message = WorkerMessage | CoordinatorMessage;
/** Who sent a frame: decides which messages are legal in it. */
export type Sender = 'worker' | 'coordinator';

// ---- encoding ----------------------------------------------------------------------------

// Plain maps (no msgpackr records), so frames are standard msgpack and carry no state
// from one message to the next; this Packr therefore holds no per-connection state.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

export function encode(message: Message): Uint8Array {
  const { type, ...fields } = message;
  return packr.pack({ v: PROTOCOL_VERSION, t: type, ...fields });
}

export function decode(data: Uint8Array, from: 'worker'): WorkerMessage;
export function decode(data: Uint8Array, from: 'coordinator'): CoordinatorMessage;
export function decode(data: Uint8Array, from: Sender): Message {
  let raw: unknown;
  try {
    raw = packr.unpack(data);
  } catch (err) {
    throw bad(`not a msgpack frame (${errorMessage(err)})`);
  }
  const o = record(raw, 'frame');
  const v = o.v;
  if (v !== PROTOCOL_VERSION) {
    const got = typeof v === 'number' ? String(v) : typeof v;
    throw new FlockError(ErrorCode.PROTOCOL_VERSION, `protocol version ${got}, expected ${PROTOCOL_VERSION}; run the same Flock version on the coordinator and every worker`);
  }
  const t = o.t;
  return from === 'worker' ? decodeWorker(o, t) : decodeCoordinator(o, t);
}

function decodeWorker(o: Obj, t: unknown): WorkerMessage {
  switch (t) {
    case MessageType.HELLO: {
      const hashes = o.dataHashes === undefined || o.dataHashes === null ? undefined : datasetInfo(o.dataHashes, 'dataHashes');
      return { type: MessageType.HELLO, name: str(o, 'name', 200), backend: str(o, 'backend', 100), ...(hashes ? { dataHashes: hashes } : {}) };
    }
    case MessageType.GRADIENT: {
      const count = uint(o, 'count');
      const correct = uint(o, 'correct');
      if (correct > count) throw bad(`gradient.correct ${correct} exceeds count ${count}`);
      return {
        type: MessageType.GRADIENT,
        step: uint(o, 'step'),
        microBatch: uint(o, 'microBatch'),
        grads: list(o, 'grads', (x, at) => f32(x, at)),
        lossSum: num(o, 'lossSum'),
        correct,
        count,
        batchStats: list(o, 'batchStats', (x, at) => {
          const s = record(x, at);
          return { mean: f32(s.mean, `${at}.mean`), variance: f32(s.variance, `${at}.variance`) };
        }),
        computeMs: nonNegative(o, 'computeMs'),
      };
    }
    case MessageType.EVALUATION: {
      const count = uint(o, 'count');
      const correct = uint(o, 'correct');
      if (correct > count) throw bad(`evaluation.correct ${correct} exceeds count ${count}`);
      return { type: MessageType.EVALUATION, requestId: uint(o, 'requestId'), chunk: uint(o, 'chunk'), lossSum: num(o, 'lossSum'), correct, count, computeMs: nonNegative(o, 'computeMs') };
    }
    case MessageType.FAILURE:
      return { type: MessageType.FAILURE, code: str(o, 'code', 100), message: str(o, 'message', 2000) };
    default:
      throw bad(`message type ${describe(t)} is not one a worker sends`);
  }
}

function decodeCoordinator(o: Obj, t: unknown): CoordinatorMessage {
  switch (t) {
    case MessageType.WELCOME: {
      const counts = record(o.counts, 'counts');
      const local = record(o.localData, 'localData');
      const weights = o.weights === undefined || o.weights === null ? undefined : record(o.weights, 'weights');
      return {
        type: MessageType.WELCOME,
        workerId: uint(o, 'workerId'),
        config: trainConfig(o.config),
        heartbeatMs: uint(o, 'heartbeatMs'),
        hashes: datasetInfo(o.hashes, 'hashes'),
        counts: { train: uint(counts, 'train'), validation: uint(counts, 'validation') },
        localData: { train: bool(local, 'train'), validation: bool(local, 'validation') },
        ...(weights ? { weights: { version: uint(weights, 'version'), ...wireState(weights) } } : {}),
      };
    }
    case MessageType.WEIGHTS:
      return { type: MessageType.WEIGHTS, version: uint(o, 'version'), ...wireState(o) };
    case MessageType.ASSIGN:
      return {
        type: MessageType.ASSIGN,
        epoch: uint(o, 'epoch'),
        step: uint(o, 'step'),
        weightsVersion: uint(o, 'weightsVersion'),
        microBatches: workList(o, 'microBatches'),
        samples: samples(o.samples),
      };
    case MessageType.EVALUATE: {
      const split = o.split;
      if (split !== 'train' && split !== 'validation') throw bad(`evaluate.split must be 'train' or 'validation', got ${describe(split)}`);
      return { type: MessageType.EVALUATE, requestId: uint(o, 'requestId'), weightsVersion: uint(o, 'weightsVersion'), split, chunks: workList(o, 'chunks'), samples: samples(o.samples) };
    }
    case MessageType.STOP:
      return { type: MessageType.STOP, reason: str(o, 'reason', 2000) };
    default:
      throw bad(`message type ${describe(t)} is not one the coordinator sends`);
  }
}

// ---- field readers (each throws FlockError(ERR_PROTOCOL) naming the field) ------------------

type Obj = Record<string, unknown>;

function bad(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'number' || typeof v === 'boolean' ? String(v) : typeof v;
}

/** A plain msgpack map (msgpackr also yields class instances for odd bytes such as 0xc1). */
function record(v: unknown, at: string): Obj {
  const proto: unknown = typeof v === 'object' && v !== null ? Object.getPrototypeOf(v) : undefined;
  if (proto !== Object.prototype && proto !== null) throw bad(`${at} must be a map, got ${describe(v)}`);
  return v as Obj;
}

function uint(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${key} must be a non-negative integer, got ${describe(v)}`);
  return v;
}

function num(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${key} must be a finite number, got ${describe(v)}`);
  return v;
}

function nonNegative(o: Obj, key: string): number {
  const v = num(o, key);
  if (v < 0) throw bad(`${key} must be >= 0, got ${v}`);
  return v;
}

function bool(o: Obj, key: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw bad(`${key} must be a boolean, got ${describe(v)}`);
  return v;
}

function str(o: Obj, key: string, maxLength: number): string {
  const v = o[key];
  if (typeof v !== 'string') throw bad(`${key} must be a string, got ${describe(v)}`);
  if (v.length > maxLength) throw bad(`${key} is longer than ${maxLength} characters`);
  return v;
}

function bytes(v: unknown, at: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw bad(`${at} must be binary, got ${describe(v)}`);
  return v;
}

/** Float32 data: binary whose length is a multiple of 4. */
function f32(v: unknown, at: string): Uint8Array {
  const b = bytes(v, at);
  if (b.byteLength % 4 !== 0) throw bad(`${at} has ${b.byteLength} bytes, not a multiple of 4 (Float32)`);
  return b;
}

/** Uint32 data: same rule as Float32. */
const u32 = f32;

function list<T>(o: Obj, key: string, item: (v: unknown, at: string) => T): T[] {
  const v = o[key];
  if (!Array.isArray(v)) throw bad(`${key} must be an array, got ${describe(v)}`);
  return v.map((x: unknown, i) => item(x, `${key}[${i}]`));
}

function wireState(o: Obj): WireState {
  return { params: list(o, 'params', f32), buffers: list(o, 'buffers', f32) };
}

function workList(o: Obj, key: string): WireWork[] {
  const out = list(o, key, (x, at) => {
    const w = record(x, at);
    return { id: uint(w, 'id'), indices: u32(w.indices, `${at}.indices`) };
  });
  const ids = new Set(out.map((w) => w.id));
  if (ids.size !== out.length) throw bad(`${key} repeats an id`);
  return out;
}

function samples(v: unknown): WireSamples {
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

function datasetInfo(v: unknown, at: string): DatasetInfo {
  const o = record(v, at);
  const train = str(o, 'train', 64);
  const validation = str(o, 'validation', 64);
  if (!HASH.test(train) || !HASH.test(validation)) throw bad(`${at} must hold sha256 hex digests`);
  return { train, validation };
}

function trainConfig(v: unknown): TrainConfig {
  const o = record(v, 'config');
  try {
    return resolveTrainConfig(o, 1);
  } catch (err) {
    throw bad(`config: ${errorMessage(err)}`);
  }
}

// ---- conversions between wire bytes and arrays --------------------------------------------

export function stateToWire(state: ModelState): WireState {
  return { params: state.params.map(float32ToBytes), buffers: state.buffers.map(float32ToBytes) };
}

export function wireToState(wire: WireState): ModelState {
  return { params: wire.params.map(bytesToFloat32), buffers: wire.buffers.map(bytesToFloat32) };
}

/** Index lists as Uint32 little-endian bytes (a copy, independent of the source's memory). */
export function indicesToBytes(indices: Uint32Array): Uint8Array {
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

// ---- errors <-> close codes (used only where a socket is closed or its close is read) -------

const CLOSE_OF_ERROR: Partial<Record<ErrorCode, CloseCode>> = {
  [ErrorCode.PROTOCOL]: CloseCode.PROTOCOL,
  [ErrorCode.PROTOCOL_VERSION]: CloseCode.PROTOCOL_VERSION,
  [ErrorCode.UNAUTHORIZED]: CloseCode.UNAUTHORIZED,
  [ErrorCode.BAD_GRADIENT]: CloseCode.BAD_GRADIENT,
  [ErrorCode.TIMEOUT]: CloseCode.TIMEOUT,
  [ErrorCode.MODEL_MISMATCH]: CloseCode.MODEL_MISMATCH,
  [ErrorCode.DATA_MISSING]: CloseCode.DATA,
  [ErrorCode.DATA_CORRUPT]: CloseCode.DATA,
  [ErrorCode.BACKEND_UNAVAILABLE]: CloseCode.BACKEND,
  [ErrorCode.SHUTDOWN]: CloseCode.SHUTDOWN,
};

const ERROR_OF_CLOSE: Record<CloseCode, ErrorCode> = {
  [CloseCode.PROTOCOL]: ErrorCode.PROTOCOL,
  [CloseCode.PROTOCOL_VERSION]: ErrorCode.PROTOCOL_VERSION,
  [CloseCode.UNAUTHORIZED]: ErrorCode.UNAUTHORIZED,
  [CloseCode.BAD_GRADIENT]: ErrorCode.BAD_GRADIENT,
  [CloseCode.TIMEOUT]: ErrorCode.TIMEOUT,
  [CloseCode.MODEL_MISMATCH]: ErrorCode.MODEL_MISMATCH,
  [CloseCode.DATA]: ErrorCode.DATA_CORRUPT,
  [CloseCode.BACKEND]: ErrorCode.BACKEND_UNAVAILABLE,
  [CloseCode.SHUTDOWN]: ErrorCode.SHUTDOWN,
  [CloseCode.INTERNAL]: ErrorCode.PROTOCOL,
};

/** The close code to send for an error that ends a connection. */
export function closeCodeFor(err: unknown): CloseCode {
  return err instanceof FlockError ? (CLOSE_OF_ERROR[err.code] ?? CloseCode.INTERNAL) : CloseCode.INTERNAL;
}

export function isCloseCode(code: number): code is CloseCode {
  return Object.hasOwn(ERROR_OF_CLOSE, code);
}

/** The error a received application close code stands for (undefined for standard codes). */
export function errorOfClose(code: number, reason: string): FlockError | undefined {
  if (!isCloseCode(code)) return undefined;
  return new FlockError(ERROR_OF_CLOSE[code], reason === '' ? `connection closed with code ${code}` : reason);
}

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export function closeReason(text: string): string {
  const enc = new TextEncoder();
  if (enc.encode(text).byteLength <= 123) return text;
  let out = text.slice(0, 120);
  while (enc.encode(`${out}...`).byteLength > 123) out = out.slice(0, -1);
  return `${out}...`;
}
