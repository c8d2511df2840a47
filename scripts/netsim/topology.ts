// The namespace harness: Linux network namespaces as hosts. One router namespace, a coordinator
// host and N worker hosts, each host joined to the router by its own veth pair (host side `eth0`,
// router side `to-<host>`), each pair its own /24 (10.200.<i>.0/24: router .1, host .2). Every
// name and address exists only inside namespaces created here, named
// `<prefix>-<pid>-<random>-<host>`, and removed by destroy() — also by the sweep of a later run
// when the run that made them died (its pid is gone). Per-link shaping: tbf rate limits and
// link down/up (this kernel has no netem); latency and jitter come from delay relays
// (delay-relay.ts) started in the router namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ip, ipIn, listNamespaces, namespacePids, netnsOf, pidAlive, sh, tcIn } from './ip.js';

export const NETSIM_PREFIX = 'flk';
const RELAY_CLI = fileURLToPath(new URL('./delay-relay.js', import.meta.url));

export interface Host {
  /** 'coordinator', 'w1', 'w2', … */
  readonly name: string;
  /** The namespace holding this host's network stack. */
  readonly ns: string;
  /** The host's own address (on its eth0). */
  readonly address: string;
  /** The router's address on this host's link (its gateway). */
  readonly gateway: string;
  /** The router-side end of this host's veth pair. */
  readonly routerIf: string;
}

export interface LinkShape {
  /** Rate limit in Mbit/s (tbf, both directions). */
  readonly mbit: number;
}

export interface RelayHandle {
  readonly address: string;
  readonly port: number;
  readonly proc: ChildProcess;
}

const nsName = /^([a-z]+)-(\d+)-([0-9a-f]+)-([a-z0-9]+)$/;

/** Inode of a namespace's bind mount, as /proc/PID/ns/net names it (`net:[…]`). */
async function nsInode(ns: string): Promise<string | undefined> {
  try {
    return `net:[${(await stat(`/run/netns/${ns}`)).ino}]`;
  } catch {
    return undefined;
  }
}

/** SIGKILLs every process living in namespace `ns` (checked by inode right before), waits until they are gone. */
async function killInside(ns: string): Promise<number[]> {
  const inode = await nsInode(ns);
  if (inode === undefined) return [];
  const killed: number[] = [];
  for (let round = 0; round < 50; round++) {
    const pids = (await namespacePids(ns).catch(() => [])).filter((p) => p !== process.pid);
    const live: number[] = [];
    for (const p of pids) if ((await pidAlive(p)) && (await netnsOf(p)) === inode) live.push(p);
    if (live.length === 0) return killed;
    for (const p of live) {
      // Only a positive pid verified to live in a namespace this harness made is signalled.
      await sh('kill', ['-KILL', String(p)]).catch(() => undefined);
      killed.push(p);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`processes still running in ${ns} after SIGKILL`);
}

/**
 * Removes namespaces with `prefix` left by runs whose process is gone (crashed, SIGKILLed),
 * killing what still runs inside them. Namespaces of live runs (other tests at the same time) stay.
 */
export async function sweepStale(prefix = NETSIM_PREFIX): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of await listNamespaces()) {
    const m = nsName.exec(ns);
    if (!m || m[1] !== prefix) continue;
    const owner = Number(m[2]);
    if (owner === process.pid || (await pidAlive(owner))) continue;
    await killInside(ns);
    await ip('netns', 'delete', ns).catch(() => undefined);
    removed.push(ns);
  }
  return removed;
}

export class NetSim {
  readonly coordinator: Host;
  readonly workers: readonly Host[];
  /** The router namespace. */
  readonly router: string;
  /** `<prefix>-<pid>-<random>`: every namespace of this run starts with it. */
  readonly runId: string;
  private readonly relays = new Set<ChildProcess>();
  private destroying: Promise<void> | undefined;
  private readonly created: string[] = [];
  /** Inodes (`net:[…]`) of this run's namespaces, to find any process still inside one after deletion. */
  private readonly inodes = new Set<string>();

  private constructor(runId: string, workers: number) {
    this.runId = runId;
    this.router = `${runId}-r`;
    const host = (name: string, i: number): Host => ({ name, ns: `${runId}-${name}`, address: `10.200.${i}.2`, gateway: `10.200.${i}.1`, routerIf: `to-${name}` });
    this.coordinator = host('c', 0);
    this.workers = Array.from({ length: workers }, (_, i) => host(`w${i + 1}`, i + 1));
  }

  get hosts(): Host[] {
    return [this.coordinator, ...this.workers];
  }

  get namespaces(): string[] {
    return [this.router, ...this.hosts.map((h) => h.ns)];
  }

  /** Builds the topology (after sweeping stale namespaces); on any failure removes what it made and rethrows. */
  static async create(opts: { workers: number; prefix?: string }): Promise<NetSim> {
    const prefix = opts.prefix ?? NETSIM_PREFIX;
    if (!/^[a-z]+$/.test(prefix)) throw new Error(`netsim prefix must be lowercase letters, got "${prefix}"`);
    if (!Number.isInteger(opts.workers) || opts.workers < 1 || opts.workers > 200) throw new Error(`netsim needs 1..200 workers, got ${opts.workers}`);
    await sweepStale(prefix);
    const sim = new NetSim(`${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`, opts.workers);
    try {
      await sim.build();
      return sim;
    } catch (err) {
      await sim.destroy();
      throw err;
    }
  }

  private async addNamespace(ns: string): Promise<void> {
    await ip('netns', 'add', ns);
    this.created.push(ns);
    const inode = await nsInode(ns);
    if (inode !== undefined) this.inodes.add(inode);
    await ipIn(ns, 'link', 'set', 'lo', 'up');
  }

  private async build(): Promise<void> {
    await this.addNamespace(this.router);
    await sh('ip', ['netns', 'exec', this.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    for (const h of this.hosts) {
      await this.addNamespace(h.ns);
      // Both ends are created directly inside the namespaces: nothing appears in the root namespace.
      await ipIn(this.router, 'link', 'add', h.routerIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
      await ipIn(this.router, 'addr', 'add', `${h.gateway}/24`, 'dev', h.routerIf);
      await ipIn(h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
      await ipIn(this.router, 'link', 'set', h.routerIf, 'up');
      await ipIn(h.ns, 'link', 'set', 'eth0', 'up');
      await ipIn(h.ns, 'route', 'add', 'default', 'via', h.gateway);
    }
  }

  /** argv prefix that runs a command inside `host`'s namespace. */
  execPrefix(host: Host | string): string[] {
    return ['ip', 'netns', 'exec', typeof host === 'string' ? host : host.ns];
  }

  /** Takes `host`'s link down (router side: the host sees no carrier, packets are dropped both ways). */
  async linkDown(host: Host): Promise<void> {
    await ipIn(this.router, 'link', 'set', host.routerIf, 'down');
  }

  async linkUp(host: Host): Promise<void> {
    await ipIn(this.router, 'link', 'set', host.routerIf, 'up');
  }

  /** Limits `host`'s link to `mbit` in both directions (tbf on each end's egress). */
  async shape(host: Host, shape: LinkShape): Promise<void> {
    if (!(shape.mbit > 0)) throw new Error(`rate must be > 0 Mbit/s, got ${shape.mbit}`);
    // Burst large enough for one GSO super-packet of veth (64 KiB) and one timer tick.
    const tbf = ['root', 'tbf', 'rate', `${shape.mbit}mbit`, 'burst', '128kb', 'latency', '200ms'];
    await tcIn(host.ns, 'qdisc', 'replace', 'dev', 'eth0', ...tbf);
    await tcIn(this.router, 'qdisc', 'replace', 'dev', host.routerIf, ...tbf);
  }

  /** `tc qdisc show` of both ends of `host`'s link (for reports). */
  async qdiscs(host: Host): Promise<string> {
    return `${host.name}: ${(await tcIn(host.ns, 'qdisc', 'show', 'dev', 'eth0')).trim()} | router: ${(await tcIn(this.router, 'qdisc', 'show', 'dev', host.routerIf)).trim()}`;
  }

  /**
   * Starts a delay relay in the router namespace listening on `via`'s gateway address and relaying to
   * `target:port`; connections from `via` to the returned address see the given one-way delay and jitter.
   */
  async startRelay(via: Host, target: Host, port: number, delay: { delayMs: number; jitterMs: number; seed?: number }): Promise<RelayHandle> {
    const args = ['--listen', `${via.gateway}:0`, '--target', `${target.address}:${port}`, '--delay-ms', String(delay.delayMs), '--jitter-ms', String(delay.jitterMs), '--seed', String(delay.seed ?? 1)];
    const [cmd, ...pre] = this.execPrefix(this.router);
    const proc = spawn(cmd!, [...pre, process.execPath, RELAY_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.relays.add(proc);
    proc.on('exit', () => this.relays.delete(proc));
    let err = '';
    proc.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    proc.stdout.setEncoding('utf8');
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      const onData = (c: string): void => {
        buf += c;
        const nl = buf.indexOf('\n');
        if (nl >= 0) {
          proc.stdout.off('data', onData);
          resolve(buf.slice(0, nl));
        }
      };
      proc.stdout.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`delay relay exited (${String(code)}) before listening: ${err.trim()}`)));
    });
    const { port: relayPort } = JSON.parse(line) as { port: number };
    proc.stdout.resume();
    return { address: via.gateway, port: relayPort, proc };
  }

  /**
   * Until the returned function is called, SIGINT/SIGTERM (Ctrl-C) remove this run's namespaces
   * before the process ends, with the conventional 128+signal exit status.
   */
  destroyOnSignals(exit: (code: number) => void): () => void {
    const handler = (signal: NodeJS.Signals): void => {
      const code = 128 + (signal === 'SIGINT' ? 2 : 15);
      this.destroy().then(() => exit(code), () => exit(code));
    };
    process.once('SIGINT', handler);
    process.once('SIGTERM', handler);
    return () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    };
  }

  /**
   * What of this run still exists: its namespaces by name, any process in the system whose network
   * namespace is one of this run's (named or not: a deleted namespace lives on while a process holds
   * it, and its veth ends with it), and links with this run's interface names in the root namespace.
   */
  async leftovers(): Promise<{ namespaces: string[]; pids: number[]; links: string[] }> {
    const namespaces = (await listNamespaces()).filter((n) => n.startsWith(`${this.runId}-`));
    const pids: number[] = [];
    for (const entry of await readdir('/proc')) {
      const pid = Number(entry);
      if (!Number.isSafeInteger(pid) || pid <= 1) continue;
      const ns = await netnsOf(pid);
      if (ns !== undefined && this.inodes.has(ns) && (await pidAlive(pid))) pids.push(pid);
    }
    const ours = new Set(this.hosts.map((h) => h.routerIf));
    const links = (await ip('-o', 'link', 'show')).split('\n').map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '').filter((n) => ours.has(n));
    return { namespaces, pids, links };
  }

  /** Stops the relays, kills whatever still runs inside, deletes every namespace (veths go with them); idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      for (const r of this.relays) r.kill('SIGTERM');
      await Promise.all([...this.relays].filter((r) => r.exitCode === null && r.signalCode === null).map((r) => once(r, 'exit')));
      const errors: string[] = [];
      for (const ns of [...this.created].reverse()) {
        try {
          await killInside(ns);
          await ip('netns', 'delete', ns);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
      if (errors.length > 0) throw new Error(`netsim cleanup: ${errors.join('; ')}`);
    })();
    return this.destroying;
  }
}
