// Plain HTTP on the coordinator's port: /healthz, /readyz, /metrics, the dashboard page,
// its bundle and its event stream (server-sent events). With a token, everything but
// /healthz needs it: an `Authorization: Bearer` header, or the cookie that `/?token=` sets
// (HttpOnly, SameSite=Strict) before redirecting to a clean address. GET /quarantine lists
// the quarantined workers with their evidence; POST /quarantine/lift?name=N lets one join
// again (issue 12); both need the token like every route but /healthz.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { JoinHandler } from '../join/join-routes.js';
import { readCookie, secretEquals, tokenMatches } from '../upgrade-auth.js';
import type { DashboardAssets } from './assets.js';
import type { RunMonitor } from './run-monitor.js';
import type { Eta, RunUpdate, StepPoint } from './run-state.js';
import type { Quarantine } from '../quarantine.js';

export interface HttpRoutesOptions {
  readonly token?: string;
  /** Whether the server speaks TLS (the cookie is then Secure). */
  readonly tls: boolean;
  /** Workers needed for /readyz. */
  readonly minWorkers: number;
  /** Event streams get the updates of this long at once (per-step updates would cost the run). */
  readonly flushMs?: number;
  /** A stream whose client lets this many bytes pile up is ended (the page reconnects and starts over). */
  readonly maxStreamBacklog?: number;
}

export interface HttpRoutesDeps {
  readonly monitor: RunMonitor;
  readonly registry: Registry;
  readonly assets: DashboardAssets;
  /** The browser worker's page and files under /join (coordinator/join/); none for a finished run. */
  readonly join?: JoinHandler;
  /** Workers quarantined in this run (issue 12), which the operator may lift. */
  readonly quarantine?: Quarantine;
  /** Told of every request that passed the token check (the pool stops counting its socket as pending). */
  readonly authorized?: (req: IncomingMessage) => void;
}

/** As often as the page redraws at most (dashboard/app.ts): one wake-up per draw for the browser. */
const FLUSH_MS = 2000;
const MAX_STREAM_BACKLOG = 4 << 20;

const COOKIE = 'flock_session';
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-store',
};

/** The cookie holds a digest of the token, not the token itself. */
const sessionValue = (token: string): string => createHash('sha256').update(`flock-dashboard\0${token}`, 'utf8').digest('hex');

export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The monitor's updates for the event streams, gathered and sent at most once per `flushMs`
 * to all of them as one serialised batch: per step only an array push, whatever the number
 * of pages; the steps of a batch go as one 'steps' update, and only the latest worker table.
 */
class UpdateBatcher {
  private queue: RunUpdate[] = [];
  private steps: StepPoint[] = [];
  private eta: Eta | undefined;
  private workers: RunUpdate | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly flushMs: number, private readonly send: (batch: readonly RunUpdate[]) => void) {}

  readonly add = (u: RunUpdate): void => {
    if (u.type === 'step') {
      this.steps.push(u.step);
      this.eta = u.eta;
    } else if (u.type === 'workers') {
      this.workers = u;
    } else {
      this.takeSteps();
      this.queue.push(u);
    }
    this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  };

  /** Sends what is gathered now (before a new stream's snapshot, which already holds it). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.takeSteps();
    if (this.workers) this.queue.push(this.workers);
    this.workers = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length > 0) this.send(batch);
  }

  /** Drops what is gathered (no stream is left to send it to). */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.steps = [];
    this.workers = undefined;
  }

  private takeSteps(): void {
    if (this.steps.length === 0) return;
    this.queue.push({ type: 'steps', steps: this.steps, eta: this.eta });
    this.steps = [];
  }
}

/** The request handler; `close()` ends open event streams. */
export function createHttpRoutes(opts: HttpRoutesOptions, deps: HttpRoutesDeps): { handle: HttpHandler; close(): void } {
  /** Open event streams and how each is ended. */
  const streams = new Map<ServerResponse, () => void>();
  const maxBacklog = opts.maxStreamBacklog ?? MAX_STREAM_BACKLOG;
  const batcher = new UpdateBatcher(opts.flushMs ?? FLUSH_MS, (batch) => {
    const frame = `event: updates\ndata: ${JSON.stringify(batch)}\n\n`;
    for (const [res, stop] of [...streams]) {
      if (res.writableEnded || res.destroyed) continue;
      // A page that does not read is cut off rather than buffered for: it reconnects and gets a snapshot.
      if (res.writableLength > maxBacklog) {
        stop();
        res.destroy();
        continue;
      }
      res.write(frame);
    }
  });
  const session = opts.token === undefined ? undefined : sessionValue(opts.token);

  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void => {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra }).end(body);
  };
  const authorized = (req: IncomingMessage): boolean => {
    if (opts.token === undefined || session === undefined) return true;
    const bearer = tokenMatches(opts.token, req.headers.authorization);
    const fromCookie = secretEquals(session, readCookie(req, COOKIE) ?? '');
    return bearer || fromCookie;
  };

  const events = (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': 'text/event-stream', Connection: 'keep-alive' });
    // The snapshot holds everything until now: what the other streams have not had yet goes first.
    batcher.flush();
    res.write(`event: snapshot\ndata: ${JSON.stringify(deps.monitor.snapshot())}\n\n`);
    if (streams.size === 0) deps.monitor.on('update', batcher.add);
    const stop = (): void => {
      if (!streams.delete(res)) return;
      if (streams.size === 0) {
        deps.monitor.off('update', batcher.add);
        batcher.clear();
      }
    };
    streams.set(res, stop);
    req.socket.setTimeout(0);
    res.on('error', stop);
    res.on('close', stop);
  };

  const handle: HttpHandler = (req, res) => {
    // Split by hand: `new URL` throws on targets like '//', and a request must never throw.
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const url = { pathname: q < 0 ? target : target.slice(0, q), searchParams: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)) };
    if (url.pathname === '/quarantine/lift' && deps.quarantine) {
      if (req.method !== 'POST') return send(res, 405, 'text/plain', 'method not allowed\n', { Allow: 'POST' });
      if (!authorized(req)) return send(res, 401, 'text/plain', 'unauthorized: send `Authorization: Bearer <token>`\n', { 'WWW-Authenticate': 'Bearer' });
      req.resume();
      const name = url.searchParams.get('name') ?? '';
      if (!deps.quarantine.lift(name)) return send(res, 404, 'text/plain', `no worker named ${JSON.stringify(name)} is quarantined\n`);
      return send(res, 200, 'text/plain', `quarantine of ${JSON.stringify(name)} lifted: it may join again\n`);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n', { Allow: 'GET, HEAD' });
    if (url.pathname === '/healthz') return send(res, 200, 'text/plain', 'ok\n');
    if (url.pathname === '/favicon.ico') return send(res, 204, 'image/x-icon', '');
    if (deps.join && (url.pathname === '/join' || url.pathname.startsWith('/join/'))) return deps.join(req, res, url, authorized(req));
    if (url.pathname === '/' && opts.token !== undefined && session !== undefined && url.searchParams.has('token')) {
      if (!tokenMatches(opts.token, `Bearer ${url.searchParams.get('token') ?? ''}`)) return send(res, 401, 'text/plain', 'wrong token\n', { 'WWW-Authenticate': 'Bearer' });
      const secure = opts.tls ? '; Secure' : '';
      return send(res, 303, 'text/plain', 'see /\n', { Location: '/', 'Set-Cookie': `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/${secure}` });
    }
    if (!authorized(req)) {
      return send(res, 401, 'text/plain', 'unauthorized: send `Authorization: Bearer <token>`, or open /?token=<token> once in the browser\n', { 'WWW-Authenticate': 'Bearer' });
    }
    deps.authorized?.(req);
    switch (url.pathname) {
      case '/readyz': {
        const ready = deps.monitor.summary().status === 'training' && deps.monitor.readyWorkers() >= opts.minWorkers;
        return send(res, ready ? 200 : 503, 'text/plain', ready ? 'ready\n' : 'not ready\n');
      }
      case '/metrics':
        deps.registry.metrics().then(
          (text) => send(res, 200, deps.registry.contentType, text),
          (err: Error) => send(res, 500, 'text/plain', `metrics failed: ${err.message}\n`),
        );
        return;
      case '/events':
        return events(req, res);
      case '/quarantine':
        return send(res, 200, 'application/json', JSON.stringify(deps.quarantine?.list() ?? []));
      case '/api/snapshot':
        return send(res, 200, 'application/json', JSON.stringify(deps.monitor.snapshot()));
      case '/':
        return send(res, 200, 'text/html; charset=utf-8', deps.assets.html);
      case '/app.js':
        return send(res, 200, 'text/javascript; charset=utf-8', deps.assets.script);
      case '/app.css':
        return send(res, 200, 'text/css; charset=utf-8', deps.assets.style);
      default:
        return send(res, 404, 'text/plain', 'not found\n');
    }
  };
  return {
    handle,
    close: () => {
      // The pages keep what they were shown: send them the end of the run first.
      batcher.flush();
      for (const [res, stop] of [...streams]) {
        stop();
        res.end();
      }
    },
  };
}
