// Numbers both ends of the protocol agree on, named once.

/** A peer that lets this many heartbeat intervals pass in silence counts as gone. */
export const HEARTBEAT_MISSES = 3;

/** After sending a close frame, wait this long for the peer's before cutting the socket. */
export const CLOSE_GRACE_MS = 2_000;

/** Bytes allowed on top of a frame's tensor data for the msgpack envelope and small fields. */
export const ENVELOPE_SLACK_BYTES = 64 * 1024;

/** Longest strings a decoder accepts, in characters. */
export const MAX_CHARS = {
  /** Worker names, backend names and error codes. */
  name: 200,
  backend: 100,
  /** Compute adapter descriptions (GPU or CPU model). */
  adapter: 300,
  code: 100,
  /** Failure messages and stop reasons. */
  message: 2000,
  /** Hex SHA-256 digests. */
  hash: 64,
} as const;

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export const MAX_CLOSE_REASON_BYTES = 123;
