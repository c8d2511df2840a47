// Options of the coordinator's worker pool: defaults merged under what the caller gives,
// validated once, including the rule that a non-loopback listener needs a token.
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
  /** Allow a non-loopback host without a token. */
  readonly insecure: boolean;
  /** Serve wss:// instead of ws://. */
  readonly tls?: TlsOptions;
  /** Ping interval; a worker that answers none of HEARTBEAT_MISSES pings in a row is dropped. */
  readonly heartbeatMs: number;
  /** A worker with assigned work that returns no result for this long is dropped. */
  readonly stepTimeoutMs: number;
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
  for (const key of ['heartbeatMs', 'stepTimeoutMs', 'helloTimeoutMs', 'waitLogMs'] as const) {
    if (!isInt(o[key], 1)) bad(`${key} must be a positive integer of milliseconds (got ${o[key]})`);
  }
  if (!isInt(o.minWorkers, 1)) bad(`--min-workers must be a positive integer (got ${o.minWorkers})`);
  if (o.tls && (!o.tls.cert || !o.tls.key)) bad('TLS needs both a certificate and a key');
  if (!isLoopback(o.host) && o.token === undefined && !o.insecure) {
    throw new FlockError(ErrorCode.INSECURE,
      `refusing to listen on ${o.host} without a token: anyone who can reach it could join and send gradients. ` +
      'Use --token <secret> (or FLOCK_TOKEN) and give workers the same token, or --insecure on a trusted network.');
  }
  return o;
}
