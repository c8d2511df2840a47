// Builds the namespace topology and keeps it until SIGINT/SIGTERM, for trying things by hand
// (`ip netns exec <ns> …`) and for the cleanup tests. Prints one JSON line with the names.
//   node dist/scripts/netsim/hold-topology.js --workers 3
import { Command } from 'commander';
import { NetSim } from './topology.js';

async function main(): Promise<void> {
  const flags = new Command('hold-topology')
    .option('--workers <n>', 'worker hosts', '3')
    .parse(process.argv)
    .opts<{ workers: string }>();
  const sim = await NetSim.create({ workers: Number(flags.workers) });
  sim.destroyOnSignals((code) => process.exit(code));
  console.log(JSON.stringify({
    event: 'ready', runId: sim.runId, router: sim.router,
    hosts: sim.hosts.map((h) => ({ name: h.name, ns: h.ns, address: h.address, gateway: h.gateway })),
  }));
  // Kept alive until a signal: the handlers above remove the namespaces and exit.
  setInterval(() => undefined, 1 << 30);
}

main().catch((err: unknown) => {
  console.error(`hold-topology: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
});
