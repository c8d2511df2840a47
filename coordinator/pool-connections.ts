// The registry of live connections: accepts a WebSocket, wires its events, closes it if it
// does not say hello in time, turns its frames into decoded messages for the pool, and
// removes it (once) whatever the reason, telling the pool so its work can move elsewhere.
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import { ErrorCode, FlockError, errorMessage } from '../shared/errors.js';
import { CloseCode, MessageType, closeCodeFor, decode, type WorkerMessage } from '../shared/protocol.js';
import { WorkerConn } from './worker-conn.js';

export interface ConnectionEvents {
  /** A decoded frame; throwing closes the connection with the error's close code. */
  readonly message: (conn: WorkerConn, msg: WorkerMessage) => void;
  /** `conn` is being removed: take back its unfinished work; returns the unit ids. */
  readonly release: (conn: WorkerConn) => number[];
  /** After a connection was removed and its socket closed. */
  readonly dropped: () => void;
  /** Whether the pool is shutting down (departures are then expected, not warnings). */
  readonly stopping: () => boolean;
}

export function violation(reason: string): FlockError {
  return new FlockError(ErrorCode.PROTOCOL, `protocol violation: ${reason}`);
}

export class ConnectionRegistry {
  private readonly conns = new Map<number, WorkerConn>();
  private nextId = 1;

  constructor(
    private readonly log: Logger,
    private readonly opts: { readonly helloTimeoutMs: number; readonly maxBufferedBytes: number },
    private readonly events: ConnectionEvents,
  ) {}

  all(): WorkerConn[] {
    return [...this.conns.values()];
  }

  /** Connections that said hello, by id. */
  ready(): WorkerConn[] {
    return this.all().filter((c) => c.state === 'ready').sort((a, b) => a.id - b.id);
  }

  readyCount(): number {
    let n = 0;
    for (const c of this.conns.values()) if (c.state === 'ready') n++;
    return n;
  }

  accept(ws: WebSocket, req: IncomingMessage): WorkerConn {
    const conn = new WorkerConn(this.nextId++, ws, req.socket, req.socket.remoteAddress ?? '?', this.log, this.opts.maxBufferedBytes);
    this.conns.set(conn.id, conn);
    // ws closes the connection itself on broken framing (1002), invalid UTF-8 (1007) or a
    // frame over maxPayload (1009); its error says why, and the close event alone would not.
    let framingError: string | undefined;
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (conn.state !== 'gone' && err.code?.startsWith('WS_ERR_')) {
        framingError = err.message;
        conn.log.warn({ event: 'worker_rejected', wsError: err.code, remote: conn.remote, err: err.message }, `closing connection ${conn.id} (${conn.name || conn.remote}): ${err.message}`);
      } else {
        conn.log.debug({ event: 'socket_error', err: err.message }, 'socket error');
      }
    });
    ws.on('pong', () => {
      conn.alive = true;
      conn.missedBeats = 0;
    });
    ws.on('message', (data: RawData, isBinary: boolean) => this.onFrame(conn, data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => {
      const why = reason.length > 0 ? reason.toString('utf8') : framingError ?? 'no reason';
      this.drop(conn, `connection closed (${code}: ${why})`);
    });
    conn.expectHello(this.opts.helloTimeoutMs, () => {
      if (conn.state !== 'greeting') return;
      const reason = `no hello within ${this.opts.helloTimeoutMs} ms`;
      conn.log.warn({ event: 'worker_rejected', code: CloseCode.TIMEOUT, remote: conn.remote, err: reason }, `closing connection ${conn.id} from ${conn.remote}: ${reason}`);
      this.drop(conn, reason, CloseCode.TIMEOUT);
    });
    return conn;
  }

  /** Removes a connection, closes its socket and tells the pool. Idempotent. */
  drop(conn: WorkerConn, reason: string, closeCode?: number): void {
    if (conn.state === 'gone') return;
    const wasReady = conn.state === 'ready';
    this.conns.delete(conn.id);
    const reassigned = this.events.release(conn);
    conn.end(closeCode, reason);
    if (wasReady) {
      const level = this.events.stopping() ? 'info' : 'warn';
      conn.log[level]({ event: 'worker_left', workerName: conn.name, reason, reassigned, workers: this.readyCount() },
        `worker ${conn.id} (${conn.name}) left: ${reason}` + (reassigned.length > 0 ? `; reassigning [${reassigned.join(', ')}]` : ''));
    } else {
      conn.log.debug({ event: 'connection_dropped', reason }, `connection ${conn.id} dropped before hello: ${reason}`);
    }
    this.events.dropped();
  }

  private onFrame(conn: WorkerConn, data: RawData, isBinary: boolean): void {
    if (conn.state === 'gone') return;
    try {
      if (!isBinary || !(data instanceof Uint8Array)) throw violation('frames must be single binary messages');
      const msg = decode(data, 'worker');
      if (msg.type !== MessageType.HELLO && conn.state !== 'ready') throw violation(`message type ${msg.type} before hello`);
      this.events.message(conn, msg);
    } catch (err) {
      const code = closeCodeFor(err);
      conn.log.warn({ event: 'worker_rejected', code, err: errorMessage(err) }, `closing worker ${conn.id}: ${errorMessage(err)}`);
      this.drop(conn, errorMessage(err), code);
    }
  }
}
