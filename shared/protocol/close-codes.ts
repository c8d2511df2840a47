// WebSocket close codes of the protocol and their mapping to and from FlockError codes, used
// only where a socket is closed or its close is read. One table says what each code means
// and which errors send it; both directions are derived from it.
import { ErrorCode, FlockError } from '../errors.js';
import { MAX_CLOSE_REASON_BYTES } from './limits.js';

/**
 * Application close codes (4000-4999). Normal shutdown uses the standard 1000 (after a
 * `stop` message); a wrong token never gets this far: it is refused with HTTP 401 on the
 * upgrade. 4002 and 4008 were once reserved for those two and are not used.
 * Divergence (ERR_DIVERGED) has no close code: it ends the run, and workers get a normal stop.
 */
export const CloseCode = {
  PROTOCOL: 4000,
  PROTOCOL_VERSION: 4001,
  BAD_GRADIENT: 4003,
  TIMEOUT: 4004,
  MODEL_MISMATCH: 4005,
  DATA: 4006,
  BACKEND: 4007,
  /** The worker returned results proven wrong (issue 12); it is refused for the rest of the run. */
  QUARANTINED: 4009,
  INTERNAL: 4999,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The standard WebSocket "normal closure". */
export const NORMAL_CLOSURE = 1000;

/** Per close code: the error it stands for when received, and the errors that send it. */
const CLOSE_TABLE: Record<CloseCode, { readonly means: ErrorCode; readonly sentFor: readonly ErrorCode[] }> = {
  [CloseCode.PROTOCOL]: { means: ErrorCode.PROTOCOL, sentFor: [ErrorCode.PROTOCOL] },
  [CloseCode.PROTOCOL_VERSION]: { means: ErrorCode.PROTOCOL_VERSION, sentFor: [ErrorCode.PROTOCOL_VERSION] },
  [CloseCode.BAD_GRADIENT]: { means: ErrorCode.BAD_GRADIENT, sentFor: [ErrorCode.BAD_GRADIENT] },
  [CloseCode.TIMEOUT]: { means: ErrorCode.TIMEOUT, sentFor: [ErrorCode.TIMEOUT] },
  [CloseCode.MODEL_MISMATCH]: { means: ErrorCode.MODEL_MISMATCH, sentFor: [ErrorCode.MODEL_MISMATCH] },
  [CloseCode.DATA]: { means: ErrorCode.DATA_CORRUPT, sentFor: [ErrorCode.DATA_CORRUPT, ErrorCode.DATA_MISSING, ErrorCode.DATA_TOO_LARGE] },
  [CloseCode.BACKEND]: { means: ErrorCode.BACKEND_UNAVAILABLE, sentFor: [ErrorCode.BACKEND_UNAVAILABLE] },
  [CloseCode.QUARANTINED]: { means: ErrorCode.QUARANTINED, sentFor: [ErrorCode.QUARANTINED] },
  // Sent for every error without a code of its own.
  [CloseCode.INTERNAL]: { means: ErrorCode.PROTOCOL, sentFor: [] },
};

const CLOSE_OF_ERROR: ReadonlyMap<ErrorCode, CloseCode> = new Map(
  Object.entries(CLOSE_TABLE)
    .flatMap(([code, row]) => row.sentFor.map((err): [ErrorCode, CloseCode] => [err, Number(code) as CloseCode])),
);

/** The close code to send for an error that ends a connection. */
export function closeCodeFor(err: unknown): CloseCode {
  return err instanceof FlockError ? (CLOSE_OF_ERROR.get(err.code) ?? CloseCode.INTERNAL) : CloseCode.INTERNAL;
}

export function isCloseCode(code: number): code is CloseCode {
  return Object.hasOwn(CLOSE_TABLE, code);
}

/** The error a received application close code stands for (undefined for standard codes). */
export function errorOfClose(code: number, reason: string): FlockError | undefined {
  if (!isCloseCode(code)) return undefined;
  return new FlockError(CLOSE_TABLE[code].means, reason === '' ? `connection closed with code ${code}` : reason);
}

/** A close reason cut to what a close frame can carry. */
export function closeReason(text: string): string {
  const enc = new TextEncoder();
  if (enc.encode(text).byteLength <= MAX_CLOSE_REASON_BYTES) return text;
  let out = text.slice(0, MAX_CLOSE_REASON_BYTES - 3);
  while (enc.encode(`${out}...`).byteLength > MAX_CLOSE_REASON_BYTES) out = out.slice(0, -1);
  return `${out}...`;
}
