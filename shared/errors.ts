// Errors with a stable machine-readable code and a message that says what to do.
// They are mapped to WebSocket close codes only at the socket edge (see protocol.ts).

export const ErrorCode = {
  BAD_OPTION: 'ERR_BAD_OPTION',
  BACKEND_UNAVAILABLE: 'ERR_BACKEND_UNAVAILABLE',
  DATA_MISSING: 'ERR_DATA_MISSING',
  DATA_CORRUPT: 'ERR_DATA_CORRUPT',
  DATA_TOO_LARGE: 'ERR_DATA_TOO_LARGE',
  DOWNLOAD_FAILED: 'ERR_DOWNLOAD_FAILED',
  CHECKSUM_MISMATCH: 'ERR_CHECKSUM_MISMATCH',
  CHECKPOINT_MISSING: 'ERR_CHECKPOINT_MISSING',
  CHECKPOINT_CORRUPT: 'ERR_CHECKPOINT_CORRUPT',
  MODEL_MISMATCH: 'ERR_MODEL_MISMATCH',
  UNSUPPORTED: 'ERR_UNSUPPORTED',
  PROTOCOL: 'ERR_PROTOCOL',
  PROTOCOL_VERSION: 'ERR_PROTOCOL_VERSION',
  UNAUTHORIZED: 'ERR_UNAUTHORIZED',
  BAD_GRADIENT: 'ERR_BAD_GRADIENT',
  TIMEOUT: 'ERR_TIMEOUT',
  INSECURE: 'ERR_INSECURE',
  SHUTDOWN: 'ERR_SHUTDOWN',
  IMAGE: 'ERR_IMAGE',
  /** A worker was proven to return wrong results and is refused for the rest of the run. */
  QUARANTINED: 'ERR_QUARANTINED',
  /** The model's weights or an honest loss became non-finite: training cannot continue. */
  DIVERGED: 'ERR_DIVERGED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class FlockError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FlockError';
    this.code = code;
  }
}

export function isFlockError(err: unknown, code?: ErrorCode): err is FlockError {
  return err instanceof FlockError && (code === undefined || err.code === code);
}

/** Best-effort message of anything thrown. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
