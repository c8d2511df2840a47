// The operator lifts a quarantine over HTTP on the coordinator's port (issue 12): GET
// /quarantine lists the evidence, POST /quarantine/lift?name=N lifts it; both need the token.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { createHttpRoutes } from '../coordinator/dashboard/http-routes.js';
import { RunMonitor } from '../coordinator/dashboard/run-monitor.js';
import { Quarantine, type Evidence } from '../coordinator/quarantine.js';

const evidence: Evidence = { workerName: 'bad', workerId: 3, backend: 'wasm', kind: 'gradients', step: 7, unit: 2, claimed: 1.5, settled: 0.15, arbiter: 'coordinator', why: 'test' };

describe('quarantine over HTTP', () => {
  let server: Server;
  let base: string;
  const quarantine = new Quarantine();
  before(async () => {
    const routes = createHttpRoutes({ token: 'secret', tls: false, minWorkers: 1 }, { monitor: new RunMonitor(), registry: new Registry(), assets: { html: '', script: Buffer.alloc(0), style: Buffer.alloc(0) }, quarantine });
    server = createServer(routes.handle).listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('lists, refuses without the token, lifts with it', async () => {
    quarantine.add(evidence);
    const auth = { Authorization: 'Bearer secret' };
    const list = await fetch(`${base}/quarantine`, { headers: auth });
    assert.equal(list.status, 200);
    assert.deepEqual(await list.json(), [evidence]);
    assert.equal((await fetch(`${base}/quarantine/lift?name=bad`, { method: 'POST' })).status, 401);
    assert.equal((await fetch(`${base}/quarantine/lift?name=bad`, { method: 'GET', headers: auth })).status, 405);
    assert.equal(quarantine.has('bad'), true);
    const lifted = await fetch(`${base}/quarantine/lift?name=bad`, { method: 'POST', headers: auth });
    assert.equal(lifted.status, 200);
    assert.equal(quarantine.has('bad'), false);
    assert.equal(quarantine.total(), 1, 'the count keeps lifted ones');
    assert.equal((await fetch(`${base}/quarantine/lift?name=bad`, { method: 'POST', headers: auth })).status, 404);
  });
});
