// The coordinator's listening socket: an HTTP or HTTPS server that answers plain requests
// with 426 (or hands them to the dashboard's routes) and hands upgrade requests to the pool, and the WebSocket server (no server of its
// own) sized so that no frame larger than a worker's biggest legitimate one is read.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { batchNormLayers, type ModelSpec } from '../shared/models/spec.js';
import { ENVELOPE_SLACK_BYTES } from '../shared/protocol.js';
import type { PoolOptions } from './pool-options.js';

/**
 * Bytes of a worker's largest legitimate frame, with room for the envelope: a gradient, a
 * relay's group sum over at most `microBatches` micro-batches (one gradient, then each part's
 * statistics and counts), or a hello whose bitsets cover `samples` images (train and
 * validation together).
 */
export function maxPayload(model: ModelSpec, samples = 0, microBatches = 1): number {
  const statChannels = batchNormLayers(model).reduce((n, l) => n + l.channels, 0);
  const perPart = statChannels * 8 + 128;
  return Math.max(model.parameterCount * 4 + perPart * Math.max(1, microBatches), Math.ceil(samples / 8) + 2) + ENVELOPE_SLACK_BYTES;
}

export interface Listener {
  readonly url: string;
  readonly server: Server;
  readonly wss: WebSocketServer;
  /** Stops the WebSocket server, then the HTTP server, cutting whatever is still connected. */
  close(): Promise<void>;
}

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Binds `opts.host:opts.port`; resolves once listening (`url` says where). */
export async function listen(opts: PoolOptions, model: ModelSpec, samples: number, microBatches: number, logger: Logger, upgradeHandler: (server: Server, wss: WebSocketServer) => UpgradeHandler, requestHandler?: RequestHandler): Promise<Listener> {
  const handler = requestHandler ?? ((_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket' }).end('This is a Flock coordinator; connect with `worker --connect`.\n');
  });
  // A request (here: an upgrade) must arrive whole within headersTimeoutMs; the server checks
  // often enough that an idle socket does not hold a slot much longer than that.
  const timeouts = {
    headersTimeout: opts.headersTimeoutMs,
    requestTimeout: opts.headersTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(opts.headersTimeoutMs / 4))),
  };
  const server = opts.tls
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, handshakeTimeout: opts.headersTimeoutMs, ...timeouts }, handler)
    : createHttpServer(timeouts, handler);
  server.maxConnections = opts.maxConnections;
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void => reject(new FlockError(ErrorCode.BAD_OPTION, `cannot listen on ${opts.host}:${opts.port} (${err.message}); pick another --host/--port`, { cause: err }));
    server.once('error', fail);
    server.listen(opts.port, opts.host, () => {
      server.off('error', fail);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ event: 'server_error', err: err.message }, `server error: ${err.message}`));
  server.on('clientError', (err, socket) => socket.destroy(err));
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxPayload(model, samples, microBatches), perMessageDeflate: false });
  wss.on('error', (err) => logger.error({ event: 'server_error', err: err.message }, `websocket server error: ${err.message}`));
  server.on('upgrade', upgradeHandler(server, wss));
  const { port } = server.address() as AddressInfo;
  const host = opts.host.includes(':') && !opts.host.startsWith('[') ? `[${opts.host}]` : opts.host;
  const url = `${opts.tls ? 'wss' : 'ws'}://${host}:${port}`;
  const close = async (): Promise<void> => {
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };
  return { url, server, wss, close };
}
