// Tools for the fault-injection suite (faults.test.ts): scripted misbehaving clients, seeded
// frame fuzzers (with no work held, and against an open step) and raw-socket clients that
// speak broken WebSocket. Log recording and child processes live in log-recorder.ts and
// child-procs.ts. Nothing here sleeps: everything waits on events.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Packr } from 'msgpackr';
import WebSocket from 'ws';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { batchNormLayers, type ModelSpec } from '../shared/models/spec.js';
import {
  CloseCode, MessageType, NORMAL_CLOSURE, PROTOCOL_VERSION, decode, encode, type AssignMessage, type CoordinatorMessage,
} from '../shared/protocol.js';
import { Rng } from '../shared/random.js';
import { float32ToBytes } from '../shared/tensor-codec.js';

/** The standard close code ws sends when a message exceeds maxPayload. */
export const MESSAGE_TOO_BIG = 1009;
/** The standard close codes for WebSocket-level protocol errors and invalid UTF-8. */
export const WS_PROTOCOL_ERROR = 1002;
export const WS_INVALID_DATA = 1007;

// ---- frames -------------------------------------------------------------------------------

// The protocol's msgpack settings, to build frames `encode` would refuse to make.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

/** Any value as a msgpack frame (no checks, no envelope added). */
export function rawFrame(value: unknown): Uint8Array {
  return packr.pack(value);
}

export const helloFrame = (name: string): Uint8Array => encode({ type: MessageType.HELLO, name, backend: 'fault', adapter: 'fault' });

/** A gradient frame for `microBatch` of the assignment; `grads` defaults to the model's shapes filled with `fill`. */
export function gradientFrame(model: ModelSpec, fields: { step: number; microBatch: number; count: number; fill?: number; grads?: Uint8Array[]; lossSum?: number }): Uint8Array {
  const grads = fields.grads ?? model.params.map((p) => float32ToBytes(new Float32Array(p.size).fill(fields.fill ?? 0)));
  return encode({
    type: MessageType.GRADIENT, step: fields.step, microBatch: fields.microBatch, grads, lossSum: fields.lossSum ?? 1,
    correct: 0, count: fields.count, batchStats: [], computeMs: 1,
  });
}

/** Samples in a work unit. */
export const unitCount = (indices: Uint8Array): number => indices.byteLength / 4;

// ---- scripted clients -----------------------------------------------------------------

export interface ClientOutcome {
  /** WebSocket close code seen by the client (1006 when the connection just died). */
  readonly code: number;
  readonly reason: string;
  /** HTTP status when the upgrade was refused. */
  readonly status?: number;
  readonly opened: boolean;
  /** Frames the client received. */
  readonly received: number;
}

export interface ScriptedClient {
  /** Resolves on WELCOME; rejects if the connection ends first. */
  readonly welcomed: Promise<void>;
  readonly outcome: Promise<ClientOutcome>;
  readonly ws: WebSocket;
}

export interface ClientScript {
  readonly token?: string;
  /** Authorization header to send instead of `Bearer <token>`. */
  readonly authorization?: string;
  /** Say hello with this name on open; undefined: never say hello. */
  readonly hello?: string;
  /** Sent right after open (before or instead of hello). */
  readonly onOpen?: (ws: WebSocket) => void;
  /** Called once, on the first ASSIGN. */
  readonly onAssign?: (ws: WebSocket, msg: AssignMessage) => void;
  /** Called once, on WELCOME. */
  readonly onWelcome?: (ws: WebSocket) => void;
  /** Called on every ASSIGN after the first and on every EVALUATE. */
  readonly onMoreWork?: (ws: WebSocket) => void;
  readonly autoPong?: boolean;
}

/** A client that follows `script` and reports how its connection ended. */
export function scriptedClient(url: string, script: ClientScript): ScriptedClient {
  const authorization = script.authorization ?? (script.token === undefined ? undefined : `Bearer ${script.token}`);
  const ws = new WebSocket(url, { headers: authorization === undefined ? undefined : { Authorization: authorization }, perMessageDeflate: false, autoPong: script.autoPong ?? true });
  let opened = false;
  let received = 0;
  let assigned = false;
  let onWelcomed: { resolve: () => void; reject: (e: Error) => void } | undefined;
  const welcomed = new Promise<void>((resolve, reject) => (onWelcomed = { resolve, reject }));
  welcomed.catch(() => undefined);
  ws.on('error', () => undefined);
  ws.on('open', () => {
    opened = true;
    script.onOpen?.(ws);
    if (script.hello !== undefined) ws.send(helloFrame(script.hello));
  });
  ws.on('message', (data: Buffer) => {
    received++;
    let msg: CoordinatorMessage;
    try {
      msg = decode(data, 'coordinator');
    } catch {
      return;
    }
    if (msg.type === MessageType.WELCOME) {
      onWelcomed?.resolve();
      script.onWelcome?.(ws);
    } else if (msg.type === MessageType.ASSIGN && !assigned) {
      assigned = true;
      script.onAssign?.(ws, msg);
    } else if (msg.type === MessageType.ASSIGN || msg.type === MessageType.EVALUATE) {
      script.onMoreWork?.(ws);
    }
  });
  const outcome = new Promise<ClientOutcome>((resolve) => {
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      onWelcomed?.reject(new Error(`HTTP ${res.statusCode}`));
      resolve({ code: 1006, reason: '', status: res.statusCode, opened, received });
    });
    ws.on('close', (code: number, reason: Buffer) => {
      onWelcomed?.reject(new Error(`closed with ${code} before welcome`));
      resolve({ code, reason: reason.toString('utf8'), opened, received });
    });
  });
  return { welcomed, outcome, ws };
}

// ---- fuzzer ---------------------------------------------------------------------------

export interface FuzzFrame {
  readonly kind: string;
  /** A string is sent as a text frame. */
  readonly data: Uint8Array | string;
}

const EVIL_VALUES: readonly unknown[] = [
  -1, -0.5, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, -(2 ** 63), 1e308, -1e308, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY,
  null, true, false, '', 'x', '7', 'a'.repeat(300), [], [1, 2, 3], {}, { a: 1 }, new Uint8Array(0), new Uint8Array(3), new Uint8Array(4096),
];

/**
 * Well-formed worker messages (and a coordinator one) to truncate and mutate. Gradients have
 * wrong shapes or NaN values: even one that decodes and lands on a unit its sender holds must
 * be rejected, never summed.
 */
function baseMessages(model: ModelSpec, rng: Rng): Record<string, unknown>[] {
  const small = model.params.map((p) => float32ToBytes(new Float32Array(Math.min(p.size, 8)).fill(rng.uniform(-1, 1))));
  const full = model.params.map((p) => float32ToBytes(new Float32Array(p.size).fill(Number.NaN)));
  return [
    { v: PROTOCOL_VERSION, t: MessageType.HELLO, name: 'fuzz', backend: 'fuzz', adapter: 'fuzz' },
    { v: PROTOCOL_VERSION, t: MessageType.GRADIENT, step: rng.int(4), microBatch: rng.int(4), grads: small, lossSum: 1, correct: 0, count: 8, batchStats: [], computeMs: 1 },
    { v: PROTOCOL_VERSION, t: MessageType.GRADIENT, step: rng.int(12), microBatch: rng.int(4), grads: full, lossSum: 1, correct: 0, count: 8, batchStats: [], computeMs: 1 },
    // A request id no evaluation ever has, so even a well-formed one is never taken as a result.
    { v: PROTOCOL_VERSION, t: MessageType.EVALUATION, requestId: 1000 + rng.int(3), chunk: rng.int(5), lossSum: 1, correct: 1, count: 10, computeMs: 1 },
    { v: PROTOCOL_VERSION, t: MessageType.FAILURE, code: 'ERR_FUZZ', message: 'fuzzed failure' },
    { v: PROTOCOL_VERSION, t: MessageType.STOP, reason: 'a worker may not send this' },
  ];
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)]!;
}

function randomBuffer(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(256);
  return out;
}

/** `n` bad frames, reproducible from `seed`: random bytes, truncations, bit flips, mutated fields. */
export function fuzzFrames(seed: number, n: number, model: ModelSpec): FuzzFrame[] {
  const rng = new Rng(seed);
  const frames: FuzzFrame[] = [];
  const kinds = ['random-bytes', 'truncated', 'bit-flip', 'mutated-field', 'missing-field', 'wrong-version', 'unknown-type', 'wrong-byte-length', 'not-a-map', 'deep-nesting', 'text'] as const;
  for (let i = 0; i < n; i++) {
    const kind = kinds[i % kinds.length]!;
    const base = pick(rng, baseMessages(model, rng));
    switch (kind) {
      case 'random-bytes':
        frames.push({ kind, data: randomBuffer(rng, rng.int(600)) });
        break;
      case 'truncated': {
        const full = rawFrame(base);
        frames.push({ kind, data: full.slice(0, 1 + rng.int(full.byteLength - 1)) });
        break;
      }
      case 'bit-flip': {
        const data = rawFrame(base).slice();
        for (let k = 1 + rng.int(4); k > 0; k--) {
          const at = rng.int(data.byteLength);
          data[at] = data[at]! ^ (1 << rng.int(8));
        }
        frames.push({ kind, data });
        break;
      }
      case 'mutated-field': {
        const keys = Object.keys(base);
        const key = pick(rng, keys);
        frames.push({ kind: `${kind}:${key}`, data: rawFrame({ ...base, [key]: pick(rng, EVIL_VALUES) }) });
        break;
      }
      case 'missing-field': {
        const keys = Object.keys(base).filter((k) => k !== 'v');
        const drop = pick(rng, keys);
        frames.push({ kind: `${kind}:${drop}`, data: rawFrame(Object.fromEntries(Object.entries(base).filter(([k]) => k !== drop))) });
        break;
      }
      case 'wrong-version':
        frames.push({ kind, data: rawFrame({ ...base, v: pick(rng, [0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 255, -1, String(PROTOCOL_VERSION), null, PROTOCOL_VERSION + 0.25, 2 ** 40]) }) });
        break;
      case 'unknown-type':
        frames.push({ kind, data: rawFrame({ ...base, t: pick(rng, [0, MessageType.WELCOME, 3, MessageType.ASSIGN, MessageType.EVALUATE, 10, 99, 255, -1, 'hello', null, 1.5]) }) });
        break;
      case 'wrong-byte-length': {
        // Half of the deltas keep whole Float32s (the coordinator's shape check), half do not (the decoder's).
        // The rest is NaN, so no such frame could ever pass for a real gradient.
        const delta = pick(rng, [-4, -1, 1, 2, 4, 4096]);
        const wrong = rng.int(model.params.length);
        const grads = model.params.map((p, k) => {
          const bytes = new Uint8Array(p.size * 4 + (k === wrong ? delta : 0));
          new Float32Array(bytes.buffer, 0, bytes.byteLength >> 2).fill(Number.NaN);
          return bytes;
        });
        frames.push({ kind, data: rawFrame({ v: PROTOCOL_VERSION, t: MessageType.GRADIENT, step: rng.int(12), microBatch: rng.int(4), grads, lossSum: 1, correct: 0, count: 8, batchStats: [], computeMs: 1 }) });
        break;
      }
      case 'not-a-map':
        frames.push({ kind, data: rawFrame(pick(rng, [[PROTOCOL_VERSION, MessageType.HELLO, 'x', 'y'], 'hello', 42, null, true, new Uint8Array(16), 1.5])) });
        break;
      case 'deep-nesting': {
        // grads: [[[...[{}]...]]], up to tens of thousands deep (msgpack's fixarray-of-one is 0x91).
        const head = rawFrame({ v: PROTOCOL_VERSION, t: MessageType.GRADIENT, grads: 0 });
        const depth = 100 + rng.int(40_000);
        const data = new Uint8Array(head.byteLength - 1 + depth + 1);
        data.set(head.subarray(0, head.byteLength - 1));
        data.fill(0x91, head.byteLength - 1, head.byteLength - 1 + depth);
        data[data.byteLength - 1] = 0x80;
        frames.push({ kind, data });
        break;
      }
      case 'text':
        frames.push({ kind, data: pick(rng, ['{"v":1,"t":1,"name":"json","backend":"x"}', 'hello', '', '\u0000\u00ff']) });
        break;
    }
  }
  return frames;
}

/** Whether raw gradient tensors (LE float32, or binary16 when `half`) hold a NaN or an infinity. */
function carriesNonFinite(grads: readonly Uint8Array[], half: boolean): boolean {
  for (const g of grads) {
    const view = new DataView(g.buffer, g.byteOffset, g.byteLength);
    if (half) {
      for (let i = 0; i + 2 <= g.byteLength; i += 2) if ((view.getUint16(i, true) & 0x7c00) === 0x7c00) return true;
    } else {
      for (let i = 0; i + 4 <= g.byteLength; i += 4) if (!Number.isFinite(view.getFloat32(i, true))) return true;
    }
  }
  return false;
}

export interface FuzzResult {
  readonly i: number;
  readonly kind: string;
  readonly code: number;
  readonly expected: number[];
}

/**
 * Sends each frame on a fresh authenticated connection to `url` right after its welcome, four
 * connections at a time; connection i says hello as `${prefix}${i}`. Resolves with the close
 * code each got and the codes its frame calls for.
 */
export async function fuzzListener(url: string, token: string, frames: readonly FuzzFrame[], prefix: string): Promise<FuzzResult[]> {
  const results: FuzzResult[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < frames.length; i = next++) {
      const frame = frames[i]!;
      const c = scriptedClient(url, { token, hello: `${prefix}${i}`, onWelcome: (ws) => ws.send(frame.data, { binary: typeof frame.data !== 'string' }) });
      const o = await c.outcome;
      results.push({ i, kind: frame.kind, code: o.code, expected: expectedCloseCodes(frame) });
    }
  };
  await Promise.all([lane(), lane(), lane(), lane()]);
  return results;
}

/**
 * Close codes the coordinator must answer a frame with, sent by a worker that has said hello
 * and holds no work. Where the fuzzer's kind decides the answer, it comes from the kind alone:
 * text frames, maps that are not a worker message type, deep nesting and gradients of any
 * byte length are protocol violations (4000: a connection that holds no work has no result
 * to give), another version is 4001. Random bytes, truncations, bit flips and mutated or
 * missing fields can turn into anything, so there the protocol's own decoder says what the
 * frame became; even then a gradient or evaluation result is 4000 because the sender holds no
 * unit, or 4003 for a gradient a bit flip made non-finite (which check answers first depends
 * on whether a round is open).
 */
export function expectedCloseCodes(frame: FuzzFrame): number[] {
  if (typeof frame.data === 'string') return [CloseCode.PROTOCOL];
  switch (frame.kind) {
    case 'wrong-version':
      return [CloseCode.PROTOCOL_VERSION];
    case 'unknown-type':
    case 'wrong-byte-length':
    case 'not-a-map':
    case 'deep-nesting':
      return [CloseCode.PROTOCOL];
  }
  try {
    const msg = decode(frame.data, 'worker');
    switch (msg.type) {
      case MessageType.HELLO:
        return [CloseCode.PROTOCOL]; // a second hello
      case MessageType.FAILURE:
        return [NORMAL_CLOSURE];
      case MessageType.GRADIENT:
      case MessageType.GROUP_SUM:
        // Unassigned (4000), but a bit flip can also make it non-finite: which check answers
        // first depends on whether a round is open when it lands, so either code is right.
        return carriesNonFinite(msg.grads, 'half' in msg && msg.half === true) ? [CloseCode.PROTOCOL, CloseCode.BAD_GRADIENT] : [CloseCode.PROTOCOL];
      case MessageType.EVALUATION:
        return [CloseCode.PROTOCOL];
    }
  } catch (err) {
    if (isFlockError(err, ErrorCode.PROTOCOL_VERSION)) return [CloseCode.PROTOCOL_VERSION];
    if (isFlockError(err, ErrorCode.PROTOCOL)) return [CloseCode.PROTOCOL];
    throw err;
  }
}

// ---- fuzzing an open step ------------------------------------------------------------------

/**
 * A gradient result for `unit` of an assignment that the coordinator would accept: the model's
 * shapes, finite values, the assigned sample count. (Its values are random, not computed: the
 * fault tests' pools do not verify results, so it passes; with verification on, guards and
 * audits would catch it, see verification.test.ts. Only mutated copies of it are ever sent.)
 */
export function wellFormedGradient(model: ModelSpec, step: number, unit: { id: number; count: number }, rng: Rng): Record<string, unknown> {
  return {
    v: PROTOCOL_VERSION, t: MessageType.GRADIENT, step, microBatch: unit.id,
    grads: model.params.map((p) => float32ToBytes(Float32Array.from({ length: p.size }, () => rng.uniform(-0.1, 0.1)))),
    lossSum: unit.count * 0.7, correct: 0, count: unit.count,
    batchStats: batchNormLayers(model).map((l) => ({ mean: float32ToBytes(new Float32Array(l.channels)), variance: float32ToBytes(new Float32Array(l.channels).fill(1)) })),
    computeMs: 1,
  };
}

/** What the open-step fuzzer does to a well-formed result, and the close codes that must follow. */
export interface GradientMutation {
  readonly kind: string;
  /** Known from the mutation alone, not from the production decoder. */
  readonly codes: readonly number[];
  readonly data: Uint8Array;
}

/** Every mutation kind, in the order the fuzzer cycles through them. */
export const GRADIENT_MUTATIONS = [
  'nan-value', 'infinite-value', 'too-few-values', 'too-many-values', 'ragged-bytes', 'missing-tensor', 'extra-tensor',
  'wrong-count', 'correct-over-count', 'negative-loss', 'non-finite-loss', 'other-step', 'foreign-unit', 'extra-batch-stats',
  'wrong-version', 'wrong-field-type', 'missing-field', 'truncated', 'negative-compute-time', 'oversized',
] as const;
export type GradientMutationKind = (typeof GRADIENT_MUTATIONS)[number];

const withTensor = (grads: Uint8Array[], k: number, t: Uint8Array): Uint8Array[] => grads.map((g, i) => (i === k ? t : g));

/**
 * `base` (from wellFormedGradient, for a unit the connection holds in the open step) changed
 * by `kind`. Each mutation makes the frame invalid on its own, so none may ever be summed:
 * broken msgpack, a field of the wrong type or range, or an unknown version are protocol
 * errors (4000, 4001) of the decoder; a step or unit the sender does not hold is 4000;
 * well-typed contents that do not fit the model or the assignment (shapes, NaN, counts,
 * statistics) are a bad gradient (4003); a frame over `maxPayload` is ws's 1009.
 */
export function mutateGradient(kind: GradientMutationKind, base: Record<string, unknown>, ctx: { model: ModelSpec; unitIds: readonly number[]; maxPayload: number }, rng: Rng): GradientMutation {
  const grads = base.grads as Uint8Array[];
  const k = rng.int(grads.length);
  const floats = (n: number, fill: () => number): Uint8Array => float32ToBytes(Float32Array.from({ length: n }, fill));
  const size = (i: number): number => grads[i]!.byteLength / 4;
  const count = base.count as number;
  const frame = (fields: Record<string, unknown>): Uint8Array => rawFrame({ ...base, ...fields });
  const m = (codes: number[], data: Uint8Array): GradientMutation => ({ kind, codes, data });
  switch (kind) {
    case 'nan-value':
    case 'infinite-value': {
      const values = new Float32Array(grads[k]!.slice().buffer);
      values[rng.int(values.length)] = kind === 'nan-value' ? Number.NaN : pick(rng, [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]);
      return m([CloseCode.BAD_GRADIENT], frame({ grads: withTensor(grads, k, float32ToBytes(values)) }));
    }
    case 'too-few-values':
      return m([CloseCode.BAD_GRADIENT], frame({ grads: withTensor(grads, k, floats(Math.max(0, size(k) - 1 - rng.int(16)), () => 0.01)) }));
    case 'too-many-values':
      return m([CloseCode.BAD_GRADIENT], frame({ grads: withTensor(grads, k, floats(size(k) + 1 + rng.int(16), () => 0.01)) }));
    case 'ragged-bytes': {
      const t = new Uint8Array(grads[k]!.byteLength + 1 + rng.int(3));
      t.set(grads[k]!);
      return m([CloseCode.PROTOCOL], frame({ grads: withTensor(grads, k, t) }));
    }
    case 'missing-tensor':
      return m([CloseCode.BAD_GRADIENT], frame({ grads: grads.filter((_, i) => i !== k) }));
    case 'extra-tensor':
      return m([CloseCode.BAD_GRADIENT], frame({ grads: [...grads, floats(1 + rng.int(8), () => 0.01)] }));
    case 'wrong-count': {
      const counts = [count + 1, count + 1 + rng.int(100), ...(count > 0 ? [count - 1, 0] : [])];
      return m([CloseCode.BAD_GRADIENT], frame({ count: pick(rng, counts), correct: 0 }));
    }
    case 'correct-over-count':
      return m([CloseCode.PROTOCOL], frame({ correct: count + 1 + rng.int(5) }));
    case 'negative-loss':
      return m([CloseCode.BAD_GRADIENT], frame({ lossSum: -(0.001 + rng.uniform(0, 5)) }));
    case 'non-finite-loss':
      // A non-finite loss decodes (protocol 5) and is refused as a bad result, not a violation.
      return m([CloseCode.BAD_GRADIENT], frame({ lossSum: pick(rng, [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) }));
    case 'other-step': {
      const step = base.step as number;
      return m([CloseCode.PROTOCOL], frame({ step: pick(rng, [step + 1, step + 2 + rng.int(1000), ...(step > 0 ? [step - 1] : [])]) }));
    }
    case 'foreign-unit': {
      const held = new Set(ctx.unitIds);
      const others = Array.from({ length: 64 }, (_, i) => i).filter((i) => !held.has(i));
      return m([CloseCode.PROTOCOL], frame({ microBatch: pick(rng, [pick(rng, others), 2 ** 31, 2 ** 40]) }));
    }
    case 'extra-batch-stats': {
      const stats = base.batchStats as unknown[];
      const c = 1 + rng.int(8);
      return m([CloseCode.BAD_GRADIENT], frame({ batchStats: [...stats, { mean: floats(c, () => 0), variance: floats(c, () => 1) }] }));
    }
    case 'wrong-version':
      return m([CloseCode.PROTOCOL_VERSION], frame({ v: pick(rng, [0, PROTOCOL_VERSION + 1, 255]) }));
    case 'wrong-field-type': {
      const key = pick(rng, ['step', 'microBatch', 'grads', 'lossSum', 'correct', 'count', 'batchStats', 'computeMs']);
      return m([CloseCode.PROTOCOL], frame({ [key]: pick(rng, ['x', null, true, { a: 1 }]) }));
    }
    case 'missing-field': {
      const drop = pick(rng, ['t', 'step', 'microBatch', 'grads', 'lossSum', 'correct', 'count', 'batchStats', 'computeMs']);
      return m([CloseCode.PROTOCOL], rawFrame(Object.fromEntries(Object.entries(base).filter(([key]) => key !== drop))));
    }
    case 'truncated': {
      const full = rawFrame(base);
      return m([CloseCode.PROTOCOL], full.slice(0, 1 + rng.int(full.byteLength - 1)));
    }
    case 'negative-compute-time':
      return m([CloseCode.PROTOCOL], frame({ computeMs: -(1 + rng.int(1000)) }));
    case 'oversized':
      return m([MESSAGE_TOO_BIG], frame({ grads: withTensor(grads, k, floats(ctx.maxPayload / 4 + 1 + rng.int(1024), () => 0.01)) }));
  }
}

// ---- raw sockets -------------------------------------------------------------------------

export interface RawOutcome {
  /** The HTTP status line's code. */
  readonly status: number;
  /** Close code of the server's close frame, if one came. */
  readonly closeCode?: number;
  /** Bytes received after the HTTP response head. */
  readonly bytesAfterHead: number;
}

/** A client WebSocket frame: FIN, `opcode`, masked unless told otherwise, extra header bits in `rsv`. */
export function wsFrame(opcode: number, payload: Uint8Array, opts: { mask?: boolean; rsv?: number } = {}): Buffer {
  const mask = opts.mask ?? true;
  const len = payload.byteLength;
  const head = [0x80 | (opts.rsv ?? 0) | opcode];
  if (len < 126) head.push((mask ? 0x80 : 0) | len);
  else if (len < 65536) head.push((mask ? 0x80 : 0) | 126, len >> 8, len & 0xff);
  else throw new RangeError('frame too long for this helper');
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i % 4]!));
  return Buffer.concat([Buffer.from(head), key, body]);
}

/** Server frames in `buf` (unmasked): the close code of the first close frame, if complete. */
function findClose(buf: Buffer): number | undefined {
  let at = 0;
  while (at + 2 <= buf.length) {
    const opcode = buf[at]! & 0x0f;
    let len = buf[at + 1]! & 0x7f;
    let head = 2;
    if (len === 126) {
      if (at + 4 > buf.length) return undefined;
      len = buf.readUInt16BE(at + 2);
      head = 4;
    } else if (len === 127) {
      if (at + 10 > buf.length) return undefined;
      len = Number(buf.readBigUInt64BE(at + 2));
      head = 10;
    }
    if (at + head + len > buf.length) return undefined;
    if (opcode === 0x8) return len >= 2 ? buf.readUInt16BE(at + head) : 1005;
    at += head + len;
  }
  return undefined;
}

/**
 * Connects with a plain TCP socket, sends an upgrade request (with `authorization` when given)
 * and then `after` (raw bytes, in the same write when `sameWrite`), and reports what came back
 * until the server closed the connection.
 */
export async function rawUpgrade(url: string, opts: { authorization?: string; after?: Buffer; sameWrite?: boolean; request?: Buffer }): Promise<RawOutcome> {
  const { hostname, port } = new URL(url);
  const socket: Socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const head = opts.request ?? Buffer.from(
    'GET / HTTP/1.1\r\n' + `Host: ${hostname}:${port}\r\n` + 'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
    (opts.authorization === undefined ? '' : `Authorization: ${opts.authorization}\r\n`) + '\r\n');
  let received = Buffer.alloc(0);
  let sentAfter = false;
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  socket.on('data', (d: Buffer) => {
    received = Buffer.concat([received, d]);
    const end = received.indexOf('\r\n\r\n');
    if (end >= 0 && !sentAfter && opts.after && !opts.sameWrite && received.subarray(0, 12).toString().includes('101')) {
      sentAfter = true;
      socket.write(opts.after);
    }
    // Answer the server's close frame so it closes promptly.
    if (end >= 0 && findClose(received.subarray(end + 4)) !== undefined && !socket.destroyed) socket.end();
  });
  socket.write(opts.sameWrite && opts.after ? Buffer.concat([head, opts.after]) : head);
  await closed;
  const end = received.indexOf('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received.toString('latin1'))?.[1] ?? 0);
  const rest = end >= 0 ? received.subarray(end + 4) : Buffer.alloc(0);
  const closeCode = findClose(rest);
  return { status, bytesAfterHead: rest.length, ...(closeCode === undefined ? {} : { closeCode }) };
}
