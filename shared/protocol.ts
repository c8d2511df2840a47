// The coordinator <-> worker wire protocol, one entry point: the messages and their numbers
// (protocol/messages.ts), the close codes (protocol/close-codes.ts), shared limits, byte
// conversions, and here the one encode/decode pair. Frames are msgpack maps {v, t, ...fields}.
// `decode` is the trust boundary: it checks every field of an `unknown` value and throws
// FlockError(ERR_PROTOCOL) with a reason; checks that need the model (parameter shapes,
// finite values) happen at the receiver, which knows the model.
import { Packr } from 'msgpackr';
import { ErrorCode, FlockError, errorMessage } from './errors.js';
import {
  bad, bool, datasetInfo, describe, heldSamples, list, anyNumber, nonNegative, optionalBool, record, samples, str, trainConfig, uint, f16, f32, wireState, workList, type Obj,
} from './protocol/fields.js';
import { MAX_CHARS } from './protocol/limits.js';
import {
  MessageType, PROTOCOL_VERSION, type AssignMessage, type CoordinatorMessage, type EvaluateMessage, type Message, type Sender, type VersionedWire, type WorkerMessage,
} from './protocol/messages.js';

export * from './protocol/messages.js';
export * from './protocol/close-codes.js';
export * from './protocol/convert.js';
export * from './protocol/limits.js';

// Plain maps (no msgpackr records), so frames are standard msgpack and carry no state
// from one message to the next; this Packr therefore holds no per-connection state.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

export function encode(message: Message): Uint8Array {
  const { type, ...fields } = message;
  return packr.pack({ v: PROTOCOL_VERSION, t: type, ...fields });
}

/** The `weights` field of assign/evaluate, encoded once per version and sent to every worker as is. */
export interface EncodedWeights {
  readonly version: number;
  /** msgpack of the key 'weights' followed by the value {version, params, buffers}. */
  readonly field: Uint8Array;
}

export function encodeWeights(weights: VersionedWire): EncodedWeights {
  const { version, params, buffers, half } = weights;
  const key = packr.pack('weights');
  const value = packr.pack({ version, params, buffers, ...(half ? { half } : {}) });
  const field = new Uint8Array(key.byteLength + value.byteLength);
  field.set(key);
  field.set(value, key.byteLength);
  return { version, field };
}

/**
 * An assign or evaluate frame carrying `weights`, as two parts whose concatenation is the
 * frame: the message's own fields, then the shared weights bytes. msgpack maps are their
 * entries one after the other, so the first part is the message's map with its entry count
 * raised by one. Sending the parts as two fragments of one WebSocket message means the
 * weights are encoded once per step, never copied per worker.
 */
export function encodeWithWeights(message: Omit<AssignMessage, 'weights'> | Omit<EvaluateMessage, 'weights'>, weights: EncodedWeights): [Uint8Array, Uint8Array] {
  if (message.weightsVersion !== weights.version) throw new RangeError(`weights version ${weights.version} attached to work at version ${message.weightsVersion}`);
  const head = encode(message);
  // msgpackr writes these maps as map16 (0xde, 2-byte count) or fixmap (0x80 | n); test/protocol.test.ts checks both ways round-trip.
  if (head[0] === 0xde && head.byteLength >= 3) {
    const view = new DataView(head.buffer, head.byteOffset, 3);
    view.setUint16(1, view.getUint16(1) + 1);
  } else if (head[0]! >= 0x80 && head[0]! < 0x8f) {
    head[0]! += 1;
  } else {
    throw new RangeError(`encodeWithWeights: expected a msgpack map of a few entries, got first byte ${head[0]}`);
  }
  return [head, weights.field];
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
      const held = o.held === undefined || o.held === null ? undefined : heldSamples(o.held);
      return {
        type: MessageType.HELLO, name: str(o, 'name', MAX_CHARS.name), backend: str(o, 'backend', MAX_CHARS.backend), adapter: str(o, 'adapter', MAX_CHARS.adapter),
        ...(hashes ? { dataHashes: hashes } : {}), ...(held ? { held } : {}), ...(optionalBool(o, 'relay') ? { relay: true } : {}),
      };
    }
    case MessageType.GRADIENT: {
      const count = uint(o, 'count');
      const correct = uint(o, 'correct');
      if (correct > count) throw bad(`gradient.correct ${correct} exceeds count ${count}`);
      const half = optionalBool(o, 'half');
      return {
        type: MessageType.GRADIENT,
        step: uint(o, 'step'),
        microBatch: uint(o, 'microBatch'),
        grads: list(o, 'grads', (x, at) => (half ? f16(x, at) : f32(x, at))),
        ...(half ? { half } : {}),
        lossSum: anyNumber(o, 'lossSum'),
        correct,
        count,
        batchStats: stats(o, 'batchStats'),
        computeMs: nonNegative(o, 'computeMs'),
      };
    }
    case MessageType.GROUP_SUM: {
      const parts = list(o, 'parts', (x, at) => {
        const p = record(x, at);
        const count = uint(p, 'count');
        const correct = uint(p, 'correct');
        if (correct > count) throw bad(`${at}.correct ${correct} exceeds count ${count}`);
        return { microBatch: uint(p, 'microBatch'), lossSum: anyNumber(p, 'lossSum'), correct, count, batchStats: stats(p, 'batchStats') };
      });
      if (parts.length === 0) throw bad('group sum has no parts');
      parts.forEach((p, i) => {
        if (i > 0 && p.microBatch <= parts[i - 1]!.microBatch) throw bad('group sum parts must be in increasing micro-batch order');
      });
      return { type: MessageType.GROUP_SUM, step: uint(o, 'step'), group: uint(o, 'group'), grads: list(o, 'grads', (x, at) => f32(x, at)), parts, computeMs: nonNegative(o, 'computeMs') };
    }
    case MessageType.EVALUATION: {
      const count = uint(o, 'count');
      const correct = uint(o, 'correct');
      if (correct > count) throw bad(`evaluation.correct ${correct} exceeds count ${count}`);
      return { type: MessageType.EVALUATION, requestId: uint(o, 'requestId'), chunk: uint(o, 'chunk'), lossSum: anyNumber(o, 'lossSum'), correct, count, computeMs: nonNegative(o, 'computeMs') };
    }
    case MessageType.FAILURE:
      return { type: MessageType.FAILURE, code: str(o, 'code', MAX_CHARS.code), message: str(o, 'message', MAX_CHARS.message) };
    default:
      throw bad(`message type ${describe(t)} is not one a worker sends`);
  }
}

function stats(o: Obj, key: string): { mean: Uint8Array; variance: Uint8Array }[] {
  return list(o, key, (x, at) => {
    const s = record(x, at);
    return { mean: f32(s.mean, `${at}.mean`), variance: f32(s.variance, `${at}.variance`) };
  });
}

/** The optional `weights` of assign/evaluate: they must be the version the work is at. */
function attachedWeights(o: Obj, weightsVersion: number): VersionedWire | undefined {
  if (o.weights === undefined || o.weights === null) return undefined;
  const w = record(o.weights, 'weights');
  const version = uint(w, 'version');
  if (version !== weightsVersion) throw bad(`weights.version ${version} differs from weightsVersion ${weightsVersion}`);
  return { version, ...wireState(w) };
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
    case MessageType.ASSIGN: {
      const weightsVersion = uint(o, 'weightsVersion');
      const weights = attachedWeights(o, weightsVersion);
      return {
        type: MessageType.ASSIGN,
        epoch: uint(o, 'epoch'),
        step: uint(o, 'step'),
        weightsVersion,
        microBatches: workList(o, 'microBatches'),
        samples: samples(o.samples),
        ...(weights ? { weights } : {}),
        ...(optionalBool(o, 'grouped') ? { grouped: true } : {}),
      };
    }
    case MessageType.EVALUATE: {
      const split = o.split;
      if (split !== 'train' && split !== 'validation') throw bad(`evaluate.split must be 'train' or 'validation', got ${describe(split)}`);
      const weightsVersion = uint(o, 'weightsVersion');
      const weights = attachedWeights(o, weightsVersion);
      return {
        type: MessageType.EVALUATE, requestId: uint(o, 'requestId'), weightsVersion, split, chunks: workList(o, 'chunks'), samples: samples(o.samples),
        ...(weights ? { weights } : {}),
      };
    }
    case MessageType.STOP:
      return { type: MessageType.STOP, reason: str(o, 'reason', MAX_CHARS.message) };
    default:
      throw bad(`message type ${describe(t)} is not one the coordinator sends`);
  }
}
