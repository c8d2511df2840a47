// Options of the coordinator's worker pool: defaults merged under what the caller gives,
// validated once, including the rules that a non-loopback listener needs a token, and a
// token on a non-loopback listener needs TLS (or it crosses the network in clear text).
import { definedOnly } from '../shared/defaults.js';
import { ErrorCode, FlockError } from '../shared/errors.js';

export interface TlsOptions {
  /** PEM certificate (chain) and private key, as read from disk. */
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

export interface PoolOptions {
  readonly host: string;
  /** 0 picks a free port; the pool's `url` says which. */
  readonly port: number;
  /** Shared secret workers present as `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** Allow a non-loopback host without a token, or with a token but without TLS. */
  readonly insecure: boolean;
  /** Serve wss:// instead of ws://. */
  readonly tls?: TlsOptions;
  /** Ping interval; a worker that answers none of HEARTBEAT_MISSES pings in a row is dropped. */
  readonly heartbeatMs: number;
  /**
   * Ceiling of the deadline for a worker's next result: a worker with assigned work that
   * returns nothing for this long is dropped, whatever the fleet's measured speed.
   */
  readonly stepTimeoutMs: number;
  /** Floor of the measured deadline: min(stepTimeoutMs, max(floor, factor x recent median)). */
  readonly stepTimeoutFloorMs: number;
  /** Multiple of the recent median time per result that a worker may take for its next one. */
  readonly deadlineFactor: number;
  /** Times a unit of work may be handed out before the step fails (each drop of its holder uses one). */
  readonly maxAttempts: number;
  /** Open TCP connections at most (workers included); more are closed at once. */
  readonly maxConnections: number;
  /** Connections that have not said hello yet (HTTP, upgrade, greeting) at most; more are refused. */
  readonly maxPending: number;
  /** An HTTP request must arrive complete within this (idle or slow sockets are cut). */
  readonly headersTimeoutMs: number;
  /** Bytes queued to one worker beyond what its socket took; a worker that lets more pile up is not reading and is dropped. */
  readonly maxBufferedBytes: number;
  /** Refused connections (401, over a cap) are logged as one summary per this interval. */
  readonly rejectLogMs: number;
  /** A connection that has not said hello after this long is closed. */
  readonly helloTimeoutMs: number;
  /** No work is handed out while fewer workers are connected. */
  readonly minWorkers: number;
  /** How often "waiting for workers" is logged while the pool waits. */
  readonly waitLogMs: number;
}

export const POOL_DEFAULTS: PoolOptions = {
  host: '127.0.0.1',
  port: 0,
  insecure: false,
  heartbeatMs: 5_000,
  stepTimeoutMs: 120_000,
  stepTimeoutFloorMs: 10_000,
  deadlineFactor: 10,
  maxAttempts: 5,
  maxConnections: 512,
  maxPending: 64,
  headersTimeoutMs: 10_000,
  maxBufferedBytes: 64 * 1024 * 1024,
  rejectLogMs: 10_000,
  helloTimeoutMs: 10_000,
  minWorkers: 1,
  waitLogMs: 5_000,
};

function bad(message: string): never {
  throw new FlockError(ErrorCode.BAD_OPTION, message);
}

const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function resolvePoolOptions(opts: Partial<PoolOptions>): PoolOptions {
  const o: PoolOptions = { ...POOL_DEFAULTS, ...definedOnly(opts) };
  if (typeof o.host !== 'string' || o.host === '') bad('--host must be a host name or address');
  if (!isInt(o.port, 0, 65535)) bad(`--port must be an integer in 0..65535 (got ${o.port})`);
  if (o.token !== undefined && (typeof o.token !== 'string' || o.token === '')) bad('--token must not be empty');
  for (const key of ['heartbeatMs', 'stepTimeoutMs', 'stepTimeoutFloorMs', 'helloTimeoutMs', 'headersTimeoutMs', 'waitLogMs', 'rejectLogMs'] as const) {
    if (!isInt(o[key], 1)) bad(`${key} must be a positive integer of milliseconds (got ${o[key]})`);
  }
  if (typeof o.deadlineFactor !== 'number' || !(o.deadlineFactor >= 1) || !Number.isFinite(o.deadlineFactor)) bad(`deadlineFactor must be a number >= 1 (got ${o.deadlineFactor})`);
  if (!isInt(o.maxAttempts, 1)) bad(`--max-attempts must be a positive integer (got ${o.maxAttempts})`);
  if (!isInt(o.maxConnections, 2)) bad(`--max-connections must be an integer >= 2 (got ${o.maxConnections})`);
  if (!isInt(o.maxPending, 1, o.maxConnections)) bad(`--max-pending must be an integer in 1..--max-connections (got ${o.maxPending})`);
  if (!isInt(o.maxBufferedBytes, 1)) bad(`maxBufferedBytes must be a positive integer (got ${o.maxBufferedBytes})`);
  if (!isInt(o.minWorkers, 1)) bad(`--min-workers must be a positive integer (got ${o.minWorkers})`);
  if (o.tls && (!o.tls.cert || !o.tls.key)) bad('TLS needs both a certificate and a key');
  if (!isLoopback(o.host) && o.token === undefined && !o.insecure) {
    throw new FlockError(ErrorCode.INSECURE,
      `refusing to listen on ${o.host} without a token: anyone who can reach it could join and send gradients. ` +
      'Use --token <secret> (or FLOCK_TOKEN) and give workers the same token, or --insecure on a trusted network.');
  }
  if (!isLoopback(o.host) && o.token !== undefined && !o.tls && !o.insecure) {
    throw new FlockError(ErrorCode.INSECURE,
      `refusing to listen on ${o.host} with a token but without TLS: workers would send the token across the network in clear text. ` +
      'Give --tls-cert <file> and --tls-key <file> (workers then connect to wss:// with --ca), or --insecure on a trusted network.');
  }
  return o;
}
