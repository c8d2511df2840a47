// /join on the coordinator's HTTP server: the page that runs a Flock worker in a browser
// tab, its bundle and WebAssembly files, and /join/status, which tells the page whether it
// may connect. `/join?k=<secret>` (the printed join link) trades the secret for the join
// cookie and redirects to the same address without it. Everything is served cross-origin
// isolated (COOP + COEP), which multi-threaded wasm needs for SharedArrayBuffer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { JOIN_COOKIE, type JoinAuth } from './join-auth.js';
import type { JoinAssets } from './join-assets.js';

export const JOIN_HEADERS = {
  // wasm-unsafe-eval: compiling WebAssembly; blob: tfjs-backend-wasm's threads run in workers made from blobs.
  'Content-Security-Policy': "default-src 'none'; script-src 'self' 'wasm-unsafe-eval' blob:; worker-src 'self' blob:; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-store',
};

export interface JoinRoutesOptions {
  /** Whether the server speaks TLS (the cookie is then Secure). */
  readonly tls: boolean;
}

/** Handles a request under /join; `authorized` says whether it carries the token or the join cookie. */
export type JoinHandler = (req: IncomingMessage, res: ServerResponse, url: { pathname: string; searchParams: URLSearchParams }, authorized: boolean) => void;

export function createJoinRoutes(opts: JoinRoutesOptions, auth: JoinAuth, assets: JoinAssets): JoinHandler {
  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void => {
    res.writeHead(status, { ...JOIN_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra }).end(body);
  };
  const unauthorized = (res: ServerResponse): void =>
    send(res, 401, 'text/plain; charset=utf-8', 'unauthorized: open the join link the coordinator printed (/join?k=…)\n', { 'WWW-Authenticate': 'Bearer' });

  return (req, res, url, authorized) => {
    if (url.pathname === '/join' && url.searchParams.has('k') && auth.cookieValue !== undefined) {
      if (!auth.linkMatches(url.searchParams.get('k') ?? '')) return unauthorized(res);
      const rest = new URLSearchParams(url.searchParams);
      rest.delete('k');
      const query = rest.toString();
      const secure = opts.tls ? '; Secure' : '';
      return send(res, 303, 'text/plain', 'see /join\n', {
        Location: `/join${query ? `?${query}` : ''}`,
        'Set-Cookie': `${JOIN_COOKIE}=${auth.cookieValue}; HttpOnly; SameSite=Strict; Path=/${secure}`,
      });
    }
    const mayJoin = authorized || auth.cookieMatches(req);
    if (url.pathname === '/join') return mayJoin ? send(res, 200, 'text/html; charset=utf-8', assets.html) : unauthorized(res);
    if (!mayJoin) return unauthorized(res);
    if (url.pathname === '/join/status') return send(res, 200, 'application/json', JSON.stringify({ mayJoin: true }));
    if (url.pathname === '/join/join.js') return send(res, 200, 'text/javascript; charset=utf-8', assets.script);
    if (url.pathname === '/join/join.css') return send(res, 200, 'text/css; charset=utf-8', assets.style);
    const wasm = url.pathname.startsWith('/join/wasm/') ? assets.wasm.get(url.pathname.slice('/join/wasm/'.length)) : undefined;
    if (wasm) return send(res, 200, 'application/wasm', wasm);
    return send(res, 404, 'text/plain', 'not found\n');
  };
}
