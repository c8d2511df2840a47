// Who may open /join and connect from a browser. A browser cannot put an Authorization
// header on a WebSocket, so the coordinator derives from its token (HMAC-SHA256, so neither
// reveals the token) a join secret for the link it prints, and a cookie value that /join
// sets (HttpOnly, SameSite=Strict) in exchange for the secret before redirecting to a clean
// address. The upgrade from a browser is authenticated by that cookie, compared in constant
// time, and its Origin must be the coordinator's own.
import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { readCookie, secretEquals } from '../upgrade-auth.js';

export const JOIN_COOKIE = 'flock_join';

export interface JoinAuth {
  /** What the join link carries (`/join?k=…`); undefined without a token. */
  readonly linkSecret: string | undefined;
  /** The value of the join cookie; undefined without a token. */
  readonly cookieValue: string | undefined;
  linkMatches(given: string): boolean;
  /** Whether the request carries the join cookie (always true without a token). */
  cookieMatches(req: IncomingMessage): boolean;
}

export function joinAuth(token: string | undefined): JoinAuth {
  if (token === undefined) {
    return { linkSecret: undefined, cookieValue: undefined, linkMatches: () => true, cookieMatches: () => true };
  }
  const derive = (purpose: string): string => createHmac('sha256', token).update(purpose, 'utf8').digest('base64url');
  const linkSecret = derive('flock join link v1');
  const cookieValue = derive('flock join cookie v1');
  return {
    linkSecret, cookieValue,
    linkMatches: (given) => secretEquals(linkSecret, given),
    cookieMatches: (req) => secretEquals(cookieValue, readCookie(req, JOIN_COOKIE) ?? ''),
  };
}

/**
 * Whether a request's Origin, if it has one, is the coordinator's own (the scheme it serves
 * and the Host the request was sent to). Browsers always send Origin on a WebSocket upgrade;
 * Node workers send none. Script of another site is refused here; SameSite=Strict already
 * keeps the browser from attaching the cookie to its requests.
 */
export function originAllowed(req: IncomingMessage, tls: boolean): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  const host = req.headers.host;
  return host !== undefined && origin === `${tls ? 'https' : 'http'}://${host}`;
}
