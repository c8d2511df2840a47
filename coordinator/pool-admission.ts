// Who may open a WebSocket: the gate on every HTTP upgrade, before any WebSocket data flows.
// A stopping pool answers 503; a wrong or missing token 401.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket, WebSocketServer } from 'ws';
import { rejectUpgrade, tokenMatches } from './upgrade-auth.js';

export interface AdmissionOptions {
  readonly token?: string;
}

export class Admission {
  constructor(
    private readonly opts: AdmissionOptions,
    private readonly wss: WebSocketServer,
    private readonly log: Logger,
    private readonly stopping: () => boolean,
    private readonly accept: (ws: WebSocket, req: IncomingMessage) => void,
  ) {}

  /** The server's `upgrade` handler. */
  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', (err) => this.log.debug({ event: 'upgrade_error', err: err.message }, 'socket error during upgrade'));
    if (this.stopping()) return rejectUpgrade(socket, 503, 'Service Unavailable');
    if (this.opts.token !== undefined && !tokenMatches(this.opts.token, req.headers.authorization)) {
      this.log.warn({ event: 'unauthorized', remote: req.socket.remoteAddress }, `rejected a connection from ${req.socket.remoteAddress ?? '?'}: missing or wrong token`);
      return rejectUpgrade(socket, 401, 'Unauthorized');
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
  };
}
