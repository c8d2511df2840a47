// The Node worker's socket: `ws` with the token as `Authorization: Bearer`, an optional CA
// for wss://, and HTTP answers to the upgrade turned into errors that say what to do.
import WebSocket, { type RawData } from 'ws';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { CLOSE_GRACE_MS } from '../shared/protocol.js';
import type { SocketFactory, WorkerSocket } from './socket.js';

export interface NodeSocketOptions {
  readonly token?: string;
  /** Extra CA certificate(s) for wss:// with a private certificate. */
  readonly ca?: string | Buffer;
  /** Who connects, for messages: a worker (default) or a relay joining its upstream. */
  readonly role?: 'worker' | 'relay';
}

/**
 * Client frames must carry a mask key (RFC 6455), which exists so that script in a browser
 * cannot craft bytes that confuse proxies. A Node worker is not browser script: an all-zero
 * key lets ws send each gradient as it is instead of XOR-copying 72 KB+ per micro-batch.
 */
const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

const isTlsError = (err: Error): boolean => /CERT|SSL|TLS|SELF_SIGNED/.test(String((err as NodeJS.ErrnoException).code ?? ''));

export function nodeSocketFactory(opts: NodeSocketOptions): SocketFactory {
  return (url, events) => {
    const headers = opts.token !== undefined ? { Authorization: `Bearer ${opts.token}` } : undefined;
    const ws = new WebSocket(url, { headers, ca: opts.ca, perMessageDeflate: false, handshakeTimeout: 30_000, generateMask: zeroMask });
    ws.on('open', () => events.open());
    ws.on('message', (data: RawData, isBinary: boolean) => events.frame(isBinary && data instanceof Uint8Array ? data : undefined));
    ws.on('ping', () => events.ping());
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      if (status === 401) {
        events.failed(new FlockError(ErrorCode.UNAUTHORIZED, `the coordinator at ${url} rejected this ${opts.role ?? 'worker'}'s token (HTTP 401); pass the coordinator's token with --token or FLOCK_TOKEN`));
      } else if (status >= 500) {
        events.lost(`coordinator answered HTTP ${status}`);
      } else {
        events.failed(new FlockError(ErrorCode.PROTOCOL, `${url} answered HTTP ${status} instead of a WebSocket upgrade; is it a Flock coordinator?`));
      }
      ws.terminate();
    });
    ws.on('error', (err) => {
      if (isTlsError(err)) {
        events.failed(new FlockError(ErrorCode.UNAUTHORIZED, `TLS connection to ${url} failed (${err.message}); pass the coordinator's certificate or its CA with --ca`, { cause: err }));
      } else {
        events.lost(err.message);
      }
    });
    ws.on('close', (code: number, reason: Buffer) => events.closed(code, reason.toString('utf8')));
    const socket: WorkerSocket = {
      get isOpen() { return ws.readyState === WebSocket.OPEN; },
      get isClosed() { return ws.readyState === WebSocket.CLOSED; },
      seesPings: true,
      send: (frame) => ws.send(frame, { binary: true }, (err) => {
        if (err) events.lost(`send failed: ${err.message}`);
      }),
      close: (code, reason) => {
        ws.close(code, reason);
        setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
      },
      terminate: () => ws.terminate(),
    };
    return socket;
  };
}
