// The worker's connection to the coordinator, as the session sees it: a binary WebSocket
// behind a factory, so the same session runs on `ws` in Node (worker/node-socket.ts, which
// adds the token header and TLS options) and on the browser's WebSocket (join/).

/** What a socket tells the session. Each connection ends with exactly one of closed, lost or failed. */
export interface SocketEvents {
  open(): void;
  /** A binary message's bytes; undefined for a text message. */
  frame(data: Uint8Array | undefined): void;
  /** A heartbeat ping arrived (only where `seesPings`). */
  ping(): void;
  /** The closing handshake finished (or the connection dropped) with this code and reason. */
  closed(code: number, reason: string): void;
  /** The connection failed in a way that a retry may fix. */
  lost(reason: string): void;
  /** The connection failed in a way that a retry cannot fix (wrong token, TLS). */
  failed(err: Error): void;
}

export interface WorkerSocket {
  readonly isOpen: boolean;
  readonly isClosed: boolean;
  /**
   * Whether `ping` is ever reported. A browser answers the coordinator's pings itself and
   * tells the page nothing, so a browser session cannot watch for a silent coordinator.
   */
  readonly seesPings: boolean;
  /** Sends one binary message; a failure is reported as `lost`. */
  send(frame: Uint8Array): void;
  /** Starts the closing handshake; the connection is cut if it does not finish in time. */
  close(code: number, reason: string): void;
  /** Cuts the connection at once. */
  terminate(): void;
}

export type SocketFactory = (url: string, events: SocketEvents) => WorkerSocket;

/**
 * Resolves after the event loop has run: between units of work, so that pings, stop and
 * close frames are handled. setImmediate in Node; a MessageChannel round trip in browsers
 * (setTimeout(0) is clamped to 4 ms there once nested).
 */
export function yieldToEventLoop(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  if (immediate) return new Promise((resolve) => void immediate(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}
