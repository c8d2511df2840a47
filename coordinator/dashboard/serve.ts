// The dashboard page, /metrics, /healthz and /readyz on a server of their own: for
// `coordinator dashboard --log run.jsonl` (a finished run, replayed from its JSON log) and for
// `coordinator start --local` (a live run in this process, which has no workers' port).
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { loadDashboardAssets } from './assets.js';
import { createHttpRoutes } from './http-routes.js';
import { createRunMetrics } from './prometheus.js';
import type { RunMonitor } from './run-monitor.js';
import type { TlsOptions } from '../pool-options.js';

export interface ServeOptions {
  readonly host: string;
  readonly port: number;
  readonly token?: string;
  readonly tls?: TlsOptions;
  /** A live run: /metrics has the process metrics too (replayed counters would mean nothing to a scraper). */
  readonly live?: boolean;
  /** Ready workers /readyz asks for (0 for a run in this process). */
  readonly minWorkers?: number;
}

export async function serveDashboard(monitor: RunMonitor, opts: ServeOptions): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const assets = await loadDashboardAssets();
  const metrics = createRunMetrics(monitor, { defaultMetrics: opts.live === true });
  const routes = createHttpRoutes({ token: opts.token, tls: opts.tls !== undefined, minWorkers: opts.minWorkers ?? 1 }, { monitor, registry: metrics.registry, assets });
  const server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, routes.handle) : createServer(routes.handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  const { port } = server.address() as AddressInfo;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  let closing: Promise<void> | undefined;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}/`, server,
    // Idempotent: the run's end and a signal may both close it.
    close: () => (closing ??= new Promise<void>((resolve) => {
      routes.close();
      metrics.close();
      server.close(() => resolve());
      server.closeAllConnections();
    })),
  };
}
