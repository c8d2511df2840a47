// The delaying relay of the namespace harness, over loopback: bytes arrive complete and in
// order whatever the jitter, each direction is delayed at least by its minimum, half-closes and
// resets pass through, and SIGTERM stops it cleanly.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { reap, spawnNode, type Proc } from './child-procs.js';

const RELAY_CLI = fileURLToPath(new URL('../scripts/netsim/delay-relay.js', import.meta.url));

/** An echo server on a free loopback port. */
async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

async function startRelay(targetPort: number, args: string[]): Promise<{ relay: Proc; port: number }> {
  const relay = spawnNode('relay', RELAY_CLI, ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${targetPort}`, ...args]);
  const ready = await Promise.race([relay.log.next((e) => e.event === 'listening'), relay.exited.then(() => undefined)]);
  assert.ok(ready, `relay did not start:\n${relay.output()}`);
  return { relay, port: ready.port as number };
}

function readAll(s: Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (c: Buffer) => parts.push(c));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

describe('delay relay', () => {
  it('keeps every byte in order under jitter as large as the delay, and passes the half-close back', async () => {
    const { server, port } = await echoServer();
    const { relay, port: relayPort } = await startRelay(port, ['--delay-ms', '3', '--jitter-ms', '3', '--seed', '7']);
    try {
      const sock = connect({ host: '127.0.0.1', port: relayPort, allowHalfOpen: true });
      sock.on('error', () => undefined);
      await once(sock, 'connect');
      const received = readAll(sock);
      // Many small writes, spaced so that they become separate chunks with separate jitter draws.
      const sent: Buffer[] = [];
      for (let i = 0; i < 200; i++) {
        const b = Buffer.alloc(4 + (i % 37) * 100);
        b.writeUInt32LE(i, 0);
        b.fill(i & 0xff, 4);
        sent.push(b);
        sock.write(b);
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
      // A large burst exercises back-pressure.
      const big = Buffer.alloc(16 << 20);
      for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
      sent.push(big);
      sock.write(big);
      sock.end();
      const got = await received;
      assert.equal(got.length, Buffer.concat(sent).length);
      assert.ok(got.equals(Buffer.concat(sent)), 'bytes reordered or changed');
      sock.destroy();
    } finally {
      await reap([relay]);
      server.close();
    }
  });

  it('delays each direction by at least its delay minus its jitter', async () => {
    const { server, port } = await echoServer();
    const { relay, port: relayPort } = await startRelay(port, ['--up-delay-ms', '40', '--down-delay-ms', '25', '--jitter-ms', '5']);
    try {
      const sock = connect({ host: '127.0.0.1', port: relayPort, noDelay: true });
      sock.on('error', () => undefined);
      await once(sock, 'connect');
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        sock.write(Buffer.from([i]));
        await once(sock, 'data');
        const rtt = performance.now() - t0;
        // (40 - 5) + (25 - 5), less 1 ms of timer slack: a lower bound only, no upper bound is asserted.
        assert.ok(rtt >= 54, `round trip ${rtt.toFixed(1)} ms is shorter than the configured minimum`);
      }
      sock.destroy();
    } finally {
      await reap([relay]);
      server.close();
    }
  });

  it('resets the client when the target refuses, and stops cleanly on SIGTERM', async () => {
    const { server, port } = await echoServer();
    server.close();
    await once(server, 'close');
    const { relay, port: relayPort } = await startRelay(port, ['--delay-ms', '1']);
    try {
      const sock = connect({ host: '127.0.0.1', port: relayPort });
      const closed = once(sock, 'close');
      sock.on('error', () => undefined);
      await closed;
      relay.proc.kill('SIGTERM');
      const { code } = await relay.exited;
      assert.equal(code, 0, relay.output());
      assert.ok(relay.log.events.some((e) => e.event === 'stopped' && e.signal === 'SIGTERM'));
    } finally {
      await reap([relay]);
    }
  });

  it('rejects a malformed address with a message', async () => {
    const relay = spawnNode('relay', RELAY_CLI, ['--listen', 'nowhere', '--target', '127.0.0.1:1']);
    const { code } = await relay.exited;
    assert.equal(code, 2);
    assert.match(relay.stderr(), /--listen must be HOST:PORT/);
  });
});
