// Who may connect and open a WebSocket. Every socket counts against --max-connections (the
// server closes any beyond it) and, until it says hello, against --max-pending: sockets
// beyond that are closed at once, idle or slow HTTP requests are cut by the server's
// headers timeout, silent WebSockets by the hello timeout, so strangers can neither hold
// every slot for long nor keep a worker out. A plain HTTP request that passed the token
// check (the dashboard, its event stream, /metrics) counts as hello: open event streams
// never hold a pending slot. On the upgrade: a stopping pool answers 503, a
// wrong or missing token 401. Refusals are logged as periodic summaries.
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket, WebSocketServer } from 'ws';
import { RejectLog } from './reject-log.js';
import { rejectUpgrade, tokenMatches } from './upgrade-auth.js';

export interface AdmissionOptions {
  readonly token?: string;
  readonly tls?: object;
  readonly maxConnections: number;
  readonly maxPending: number;
  readonly rejectLogMs: number;
}

export class Admission {
  /** Sockets that have not said hello yet. */
  private readonly pending = new Set<Duplex>();
  private readonly unauthorized: RejectLog;
  private readonly refused: RejectLog;

  constructor(
    private readonly opts: AdmissionOptions,
    private readonly wss: WebSocketServer,
    private readonly log: Logger,
    private readonly stopping: () => boolean,
    private readonly accept: (ws: WebSocket, req: IncomingMessage) => void,
  ) {
    this.unauthorized = new RejectLog(log, opts.rejectLogMs, 'unauthorized', 'refused (HTTP 401): missing or wrong token');
    this.refused = new RejectLog(log, opts.rejectLogMs, 'connection_refused', `refused: over --max-connections ${opts.maxConnections} or --max-pending ${opts.maxPending} (connections that have not said hello)`);
  }

  /** Counts the server's sockets from the moment they connect (after the TLS handshake with TLS). */
  attach(server: Server): void {
    server.on(this.opts.tls ? 'secureConnection' : 'connection', (socket: Socket) => this.onSocket(socket));
    server.on('drop', (data?: { remoteAddress?: string }) => this.refused.note(data?.remoteAddress));
  }

  /** The socket said hello (or made an authorized HTTP request): it no longer counts as pending. */
  greeted(socket: Duplex): void {
    this.pending.delete(socket);
  }

  pendingCount(): number {
    return this.pending.size;
  }

  /** Logs the refusals not yet summarised. */
  close(): void {
    this.unauthorized.close();
    this.refused.close();
  }

  /** The server's `upgrade` handler. */
  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', (err) => this.log.debug({ event: 'upgrade_error', err: err.message }, 'socket error during upgrade'));
    if (this.stopping()) return rejectUpgrade(socket, 503, 'Service Unavailable');
    if (this.opts.token !== undefined && !tokenMatches(this.opts.token, req.headers.authorization)) {
      this.unauthorized.note(req.socket.remoteAddress);
      return rejectUpgrade(socket, 401, 'Unauthorized');
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
  };

  private onSocket(socket: Socket): void {
    if (this.pending.size >= this.opts.maxPending) {
      this.refused.note(socket.remoteAddress);
      socket.destroy();
      return;
    }
    this.pending.add(socket);
    socket.once('close', () => this.pending.delete(socket));
  }
}
