// The browser's WebSocket behind the worker session's socket interface. The page cannot set
// an Authorization header: the upgrade carries the HttpOnly join cookie that /join set, and
// the browser adds the page's Origin, which the coordinator checks. A refused upgrade is
// invisible to script (no status, just an error and close 1006), so it reads as `lost`:
// the page checks its access with a plain request first (see app.ts).
import type { SocketFactory, WorkerSocket } from '../worker/socket.js';

/** Cut a socket whose closing handshake has not finished after this long. */
const CLOSE_GRACE_MS = 2_000;

export const browserSocketFactory: SocketFactory = (url, events) => {
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let ended = false;
  ws.onopen = () => events.open();
  ws.onmessage = (e: MessageEvent) => events.frame(e.data instanceof ArrayBuffer ? new Uint8Array(e.data) : undefined);
  ws.onerror = () => {
    // Always followed by close; report once, there, with the code.
  };
  ws.onclose = (e: CloseEvent) => {
    if (ended) return;
    ended = true;
    if (e.code === 1006) events.lost(e.reason || 'connection failed or dropped (1006)');
    else events.closed(e.code, e.reason);
  };
  const socket: WorkerSocket = {
    get isOpen() { return ws.readyState === WebSocket.OPEN; },
    get isClosed() { return ws.readyState === WebSocket.CLOSED; },
    seesPings: false,
    send: (frame) => {
      try {
        ws.send(frame);
      } catch (err) {
        events.lost(`send failed: ${String(err)}`);
      }
    },
    close: (code, reason) => {
      ws.close(code, reason);
      setTimeout(() => socket.terminate(), CLOSE_GRACE_MS);
    },
    terminate: () => {
      if (ws.readyState !== WebSocket.CLOSED) ws.close();
      if (!ended) {
        ended = true;
        events.lost('connection cut');
      }
    },
  };
  return socket;
};
