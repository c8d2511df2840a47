// Token check on the HTTP upgrade, before any WebSocket data flows. Both sides are hashed
// first so timingSafeEqual compares equal lengths and the compare time reveals nothing.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Whether an `Authorization` header carries `Bearer <expected>`. */
export function tokenMatches(expected: string, authorization: string | undefined): boolean {
  const match = /^Bearer[ ]+(.+)$/i.exec(authorization ?? '');
  const given = match?.[1]?.trim() ?? '';
  const equal = timingSafeEqual(sha256(expected), sha256(given));
  return match !== null && equal;
}

/** Answers an upgrade request with a plain HTTP error and drops the connection. */
export function rejectUpgrade(socket: Duplex, status: 401 | 503, text: string): void {
  const headers = status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${headers}\r\n${text}`);
}
