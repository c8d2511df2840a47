// Token checks on HTTP requests and upgrades, before any WebSocket data flows (the workers'
// header, the dashboard's and /join's cookies). Both sides are hashed first so
// timingSafeEqual compares equal lengths and the compare time reveals nothing.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time equality of two strings (both hashed first, so lengths do not leak). */
export function secretEquals(expected: string, given: string): boolean {
  return timingSafeEqual(sha256(expected), sha256(given));
}

/** Whether an `Authorization` header carries `Bearer <expected>`. */
export function tokenMatches(expected: string, authorization: string | undefined): boolean {
  const match = /^Bearer[ ]+(.+)$/i.exec(authorization ?? '');
  const equal = secretEquals(expected, match?.[1]?.trim() ?? '');
  return match !== null && equal;
}

/** The value of cookie `name` in the request, if it has one. */
export function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Answers an upgrade request with a plain HTTP error and drops the connection. */
export function rejectUpgrade(socket: Duplex, status: 401 | 503, text: string): void {
  const headers = status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${headers}\r\n${text}`);
}
