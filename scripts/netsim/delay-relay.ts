// CLI of the delaying TCP relay (see delay-line.ts). Prints one JSON line with the bound address,
// then relays until SIGTERM or SIGINT. Example, 30 ms ± 5 ms round trip:
//   node dist/scripts/netsim/delay-relay.js --listen 10.0.0.1:0 --target 10.0.1.2:8080 --delay-ms 15 --jitter-ms 2.5
// --delay-ms/--jitter-ms apply to both directions; --up-*/--down-* override one direction
// (up = client → target).
import { Command } from 'commander';
import { DelayRelay } from './delay-line.js';

interface Flags {
  listen: string;
  target: string;
  delayMs: string;
  jitterMs: string;
  upDelayMs?: string;
  upJitterMs?: string;
  downDelayMs?: string;
  downJitterMs?: string;
  seed: string;
}

function hostPort(s: string, what: string): { host: string; port: number } {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(s);
  const port = Number(m?.[2]);
  if (!m || !m[1] || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${what} must be HOST:PORT, got "${s}"`);
  return { host: m[1], port };
}

function ms(s: string, what: string): number {
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v) || v < 0) throw new Error(`${what} must be a number of ms >= 0, got "${s}"`);
  return v;
}

async function main(): Promise<void> {
  const flags = new Command('delay-relay')
    .description('TCP relay adding latency and jitter per direction, never reordering bytes')
    .requiredOption('--listen <host:port>', 'address to listen on (port 0: any free port)')
    .requiredOption('--target <host:port>', 'address every connection is relayed to')
    .option('--delay-ms <ms>', 'one-way delay, both directions', '0')
    .option('--jitter-ms <ms>', 'one-way jitter (uniform ±), both directions', '0')
    .option('--up-delay-ms <ms>', 'client → target delay (overrides --delay-ms)')
    .option('--up-jitter-ms <ms>', 'client → target jitter')
    .option('--down-delay-ms <ms>', 'target → client delay')
    .option('--down-jitter-ms <ms>', 'target → client jitter')
    .option('--seed <n>', 'seed of the jitter draws', '1')
    .parse(process.argv)
    .opts<Flags>();
  const listen = hostPort(flags.listen, '--listen');
  const target = hostPort(flags.target, '--target');
  const delay = ms(flags.delayMs, '--delay-ms');
  const jitter = ms(flags.jitterMs, '--jitter-ms');
  const relay = new DelayRelay({
    listenHost: listen.host,
    listenPort: listen.port,
    targetHost: target.host,
    targetPort: target.port,
    upstream: { delayMs: ms(flags.upDelayMs ?? String(delay), '--up-delay-ms'), jitterMs: ms(flags.upJitterMs ?? String(jitter), '--up-jitter-ms') },
    downstream: { delayMs: ms(flags.downDelayMs ?? String(delay), '--down-delay-ms'), jitterMs: ms(flags.downJitterMs ?? String(jitter), '--down-jitter-ms') },
    seed: Number(flags.seed),
  });
  const addr = await relay.listen();
  console.log(JSON.stringify({ event: 'listening', host: addr.address, port: addr.port, target: `${target.host}:${target.port}` }));
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    void relay.close().then(() => {
      console.log(JSON.stringify({ event: 'stopped', signal, connections: relay.connections }));
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(`delay-relay: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
});
