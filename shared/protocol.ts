// The coordinator <-> worker wire protocol, one entry point: the messages and their numbers
// (protocol/messages.ts), the close codes (protocol/close-codes.ts), shared limits, byte
// conversions, and here the one encode/decode pair. Frames are msgpack maps {v, t, ...fields}.
// `decode` is the trust boundary: it checks every field of an `unknown` value and throws
// FlockError(ERR_PROTOCOL) with a reason; checks that need the model (parameter shapes,
// finite values) happen at the receiver, which knows the model.
import { Packr } from 'msgpackr';
import { ErrorCode, FlockError, errorMessage } from './errors.js';
import {
  bad, bool, datasetInfo, describe, heldSamples, list, anyNumber, nonNegative, record, samples, str, trainConfig, uint, f32, wireState, workList, type Obj,
} from './protocol/fields.js';
import { MAX_CHARS } from './protocol/limits.js';
import { MessageType, PROTOCOL_VERSION, type CoordinatorMessage, type Message, type Sender, type WorkerMessage } from './protocol/messages.js';

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
        type: MessageType.HELLO, name: str(o, 'name', MAX_CHARS.name), backend: str(o, 'backend', MAX_CHARS.backend),
        ...(hashes ? { dataHashes: hashes } : {}), ...(held ? { held } : {}),
      };
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
        lossSum: anyNumber(o, 'lossSum'),
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
      return { type: MessageType.EVALUATION, requestId: uint(o, 'requestId'), chunk: uint(o, 'chunk'), lossSum: anyNumber(o, 'lossSum'), correct, count, computeMs: nonNegative(o, 'computeMs') };
    }
    case MessageType.FAILURE:
      return { type: MessageType.FAILURE, code: str(o, 'code', MAX_CHARS.code), message: str(o, 'message', MAX_CHARS.message) };
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
      return { type: MessageType.STOP, reason: str(o, 'reason', MAX_CHARS.message) };
    default:
      throw bad(`message type ${describe(t)} is not one the coordinator sends`);
  }
}
