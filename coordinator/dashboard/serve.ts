// `coordinator dashboard --log run.jsonl`: the dashboard page and /metrics of a finished
// run, served from its JSON log on a server of its own.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadDashboardAssets } from './assets.js';
import { createHttpRoutes } from './http-routes.js';
import { createRunMetrics } from './prometheus.js';
import type { RunMonitor } from './run-monitor.js';

export interface ServeOptions {
  readonly host: string;
  readonly port: number;
  readonly token?: string;
}

export async function serveDashboard(monitor: RunMonitor, opts: ServeOptions): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const assets = await loadDashboardAssets();
  // Replayed counters would mean nothing to a scraper; the page is what this is for.
  const metrics = createRunMetrics(monitor, { defaultMetrics: false });
  const routes = createHttpRoutes({ token: opts.token, tls: false, minWorkers: 1 }, { monitor, registry: metrics.registry, assets });
  const server = createServer(routes.handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host}:${port}/`, server,
    close: () => new Promise<void>((resolve) => {
      routes.close();
      metrics.close();
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
