// A TCP relay that delays every chunk by a fixed latency plus jitter, per direction. netem is
// missing from this kernel, so latency for the namespace harness comes from this process in the
// router namespace. Jitter never reorders the bytes of one stream: each chunk leaves at
// max(previous chunk's departure, arrival + delay + jitter), as on a real FIFO link.
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Rng } from '../../shared/random.js';

export interface DirectionDelay {
  /** Mean one-way delay added to every chunk, ms. */
  readonly delayMs: number;
  /** Each chunk's delay is drawn uniformly from [delay - jitter, delay + jitter], ms. */
  readonly jitterMs: number;
}

export interface DelayRelayOptions {
  readonly listenHost: string;
  /** 0 picks a free port. */
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
  /** Client → target. */
  readonly upstream: DirectionDelay;
  /** Target → client. */
  readonly downstream: DirectionDelay;
  /** Seed of the jitter draws. */
  readonly seed: number;
  /** Bytes held per direction before the sender is paused (back-pressure). */
  readonly highWaterBytes: number;
}

export const DELAY_RELAY_DEFAULTS = { listenHost: '0.0.0.0', listenPort: 0, seed: 1, highWaterBytes: 8 << 20 } as const;

function checkDelay(d: DirectionDelay, what: string): void {
  if (!Number.isFinite(d.delayMs) || d.delayMs < 0) throw new Error(`${what} delay must be a number >= 0 ms, got ${d.delayMs}`);
  if (!Number.isFinite(d.jitterMs) || d.jitterMs < 0) throw new Error(`${what} jitter must be a number >= 0 ms, got ${d.jitterMs}`);
}

/** One direction of one connection: a FIFO of chunks, each released at its departure time. */
class DelayedPipe {
  private readonly queue: { due: number; chunk: Buffer | null }[] = [];
  private lastDue = 0;
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private blocked = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly delay: DirectionDelay,
    private readonly rng: Rng,
    private readonly highWater: number,
  ) {
    from.on('data', (chunk: Buffer) => this.push(chunk));
    // A half-close travels with the same delay, after the data before it.
    from.on('end', () => this.push(null));
    to.on('drain', () => {
      this.blocked = false;
      this.flowControl();
    });
  }

  private departure(): number {
    const j = this.delay.jitterMs;
    const d = Math.max(0, this.delay.delayMs + (j > 0 ? this.rng.uniform(-j, j) : 0));
    this.lastDue = Math.max(this.lastDue, performance.now() + d);
    return this.lastDue;
  }

  private push(chunk: Buffer | null): void {
    this.queue.push({ due: this.departure(), chunk });
    this.queued += chunk?.length ?? 0;
    this.flowControl();
    this.arm();
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    const head = this.queue[0];
    if (head === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.release();
    }, Math.max(0, head.due - performance.now()));
  }

  private release(): void {
    const now = performance.now();
    // Timers may fire up to a millisecond early or late; release what is due within 0.5 ms.
    while (this.queue.length > 0 && this.queue[0]!.due <= now + 0.5) {
      const { chunk } = this.queue.shift()!;
      if (this.to.destroyed) return;
      if (chunk === null) {
        this.to.end();
        continue;
      }
      this.queued -= chunk.length;
      if (!this.to.write(chunk)) this.blocked = true;
    }
    this.flowControl();
    this.arm();
  }

  private flowControl(): void {
    if (this.from.destroyed) return;
    if (this.blocked || this.queued > this.highWater) this.from.pause();
    else this.from.resume();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

/** The relay: listens, and for every connection opens one to the target and pipes both ways with delay. */
export class DelayRelay {
  private readonly opts: DelayRelayOptions;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly rng: Rng;
  private closing: Promise<void> | undefined;
  connections = 0;

  constructor(opts: Partial<DelayRelayOptions> & Pick<DelayRelayOptions, 'targetHost' | 'targetPort' | 'upstream' | 'downstream'>) {
    this.opts = { ...DELAY_RELAY_DEFAULTS, ...opts };
    checkDelay(this.opts.upstream, 'upstream');
    checkDelay(this.opts.downstream, 'downstream');
    this.rng = new Rng(this.opts.seed);
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => this.accept(client));
  }

  async listen(): Promise<AddressInfo> {
    this.server.listen(this.opts.listenPort, this.opts.listenHost);
    await Promise.race([once(this.server, 'listening'), once(this.server, 'error').then(([err]) => Promise.reject(err as Error))]);
    return this.server.address() as AddressInfo;
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
  }

  private accept(client: Socket): void {
    this.connections++;
    const target = connect({ host: this.opts.targetHost, port: this.opts.targetPort, allowHalfOpen: true, noDelay: true });
    this.track(client);
    this.track(target);
    client.pause();
    const up = new DelayedPipe(client, target, this.opts.upstream, this.rng, this.opts.highWaterBytes);
    const down = new DelayedPipe(target, client, this.opts.downstream, this.rng, this.opts.highWaterBytes);
    target.on('connect', () => client.resume());
    // A reset or error on one side resets the other: the relay never hides a broken connection.
    const teardown = (): void => {
      up.stop();
      down.stop();
      client.destroy();
      target.destroy();
    };
    client.on('error', teardown);
    target.on('error', teardown);
    // A clean close needs nothing: each side's FIN travels through its pipe and closes the other.
    client.on('close', (hadError) => hadError && teardown());
    target.on('close', (hadError) => hadError && teardown());
  }

  /**
   * Resets every open connection (both sides) but keeps listening: a link that breaks and
   * comes back.
   */
  cut(): void {
    for (const s of [...this.sockets]) s.resetAndDestroy();
  }

  /** Stops listening and drops every connection; idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const s of this.sockets) s.destroy();
      this.server.close(() => resolve());
    });
    return this.closing;
  }
}
