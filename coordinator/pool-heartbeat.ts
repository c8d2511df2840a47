// Pings every connection each interval and drops one that has answered none of the last
// HEARTBEAT_MISSES pings. A worker busy in one long synchronous computation (a large
// micro-batch on a slow backend) cannot answer, so a single missed ping is not enough.
// Each beat also drops a worker that lets frames pile up unread: over the limit, and not
// one byte fewer than a beat earlier (backpressure; see WorkerConn.send for new frames).
import type { Clock } from '../shared/clock.js';
import { HEARTBEAT_MISSES } from '../shared/protocol.js';
import { notReading, type WorkerConn } from './worker-conn.js';

export class Heartbeat {
  private readonly timer: NodeJS.Timeout;
  private lastBeat: number;

  constructor(
    private readonly intervalMs: number,
    private readonly clock: Clock,
    private readonly conns: () => readonly WorkerConn[],
    private readonly drop: (conn: WorkerConn, reason: string) => void,
    private readonly maxBufferedBytes: number,
  ) {
    this.lastBeat = clock.now();
    this.timer = setInterval(() => this.beat(), intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private beat(): void {
    const now = this.clock.now();
    // If this process's own event loop stalled, unread pongs may be queued: judge no one.
    const judge = now - this.lastBeat < 1.5 * this.intervalMs;
    this.lastBeat = now;
    for (const conn of this.conns()) {
      const backlog = conn.stuckBacklog();
      if (judge && backlog !== undefined) {
        this.drop(conn, notReading(backlog, this.maxBufferedBytes));
        continue;
      }
      if (judge && !conn.alive && ++conn.missedBeats >= HEARTBEAT_MISSES) {
        this.drop(conn, `missed ${HEARTBEAT_MISSES} heartbeats (no pong for ${HEARTBEAT_MISSES * this.intervalMs} ms)`);
        continue;
      }
      conn.alive = false;
      if (conn.socket.readyState === conn.socket.OPEN) conn.socket.ping();
    }
  }
}
