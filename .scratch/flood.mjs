import { connect } from 'node:net';
import { once } from 'node:events';
import net from 'node:net';
const origEmit = net.Socket.prototype.emit;
net.Socket.prototype.emit = function (ev, ...a) { if (ev === 'error' && this.listenerCount('error') === 0) console.log('unhandled error on socket', this.remotePort, this.localPort, this.constructor.name, new Error().stack.split('\n').slice(0,3).join('|'), this._httpMessage ? 'http' : '', this.server ? 'server-side' : 'client-side'); return origEmit.call(this, ev, ...a); };
const { WorkerPool } = await import('../dist/coordinator/worker-pool.js');
const { loadCifar } = await import('../dist/shared/data/cifar.js');
const { writeSyntheticCifar } = await import('../dist/shared/data/synthetic.js');
const { modelSpec } = await import('../dist/shared/models/spec.js');
const { resolveTrainConfig } = await import('../dist/shared/training/config.js');
const pino = (await import('pino')).default;
await writeSyntheticCifar('/tmp/ph-syn', { trainPerFile: 24, testCount: 40, seed: 21 });
const { train, validation } = await loadCifar('/tmp/ph-syn');
const config = resolveTrainConfig({ epochs: 1, batchSize: 32, microBatch: 8 }, 1);
const pool = await WorkerPool.listen({ port: 0, token: 'secret', maxConnections: 40, maxPending: 8, headersTimeoutMs: 300, helloTimeoutMs: 300 }, { logger: pino({ level: 'info' }), clock: { now: () => Date.now() }, model: modelSpec(config.model), config, train, validation });
const { hostname, port } = new URL(pool.url);
const closed = [];
for (let i = 0; i < 50; i++) { const s = connect(Number(port), hostname); s.on('error', () => undefined); closed.push(once(s, 'close')); }
function upgradeStatus(url, authorization) {
  const socket = connect(Number(port), hostname);
  let received = '';
  socket.on('error', () => undefined);
  socket.setEncoding('latin1').on('data', (d) => (received += d));
  socket.on('connect', () => socket.write(`GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${Buffer.alloc(16, 1).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nAuthorization: ${authorization}\r\n\r\n`));
  return once(socket, 'close').then(() => Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0));
}
const intr = Promise.all(Array.from({ length: 20 }, () => upgradeStatus(pool.url, 'Bearer wrong')));
const t0 = Date.now();
console.log(await intr);
await Promise.all(closed);
console.log('all idle closed after', Date.now() - t0);
await pool.close();
