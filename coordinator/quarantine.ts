// Workers proven to return wrong results (issue 12), by name, with the evidence. A name in
// the list is refused at hello for the rest of the run; the operator can lift it (HTTP
// POST /quarantine/lift on the coordinator's port), after which the name may join again.
export interface Evidence {
  readonly workerName: string;
  readonly workerId: number;
  readonly backend: string;
  /** 'gradients' with the global step, or 'evaluate' with the request id. */
  readonly kind: 'gradients' | 'evaluate';
  readonly step: number;
  readonly unit: number;
  /** Per-sample gradient norm (or loss per sample for evaluations) of the worker's result. */
  readonly claimed: number;
  /** The same for the result that was found right. */
  readonly settled: number;
  /** Who else computed the unit and agreed with the settled result ('coordinator' or a worker name). */
  readonly arbiter: string;
  readonly why: string;
}

/** Whether `v` is well-formed evidence (read back from a checkpoint). */
export function isEvidence(v: unknown): v is Evidence {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  const str = (k: string): boolean => typeof e[k] === 'string';
  const num = (k: string): boolean => typeof e[k] === 'number';
  return ['workerName', 'backend', 'arbiter', 'why'].every(str) && ['workerId', 'step', 'unit', 'claimed', 'settled'].every(num) && (e.kind === 'gradients' || e.kind === 'evaluate');
}

export class Quarantine {
  private readonly byName = new Map<string, Evidence>();
  private count = 0;

  /** @param restored the quarantines of the run this one resumes (kept in its checkpoint) */
  constructor(restored: readonly Evidence[] = []) {
    for (const e of restored) this.add(e);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  add(e: Evidence): void {
    if (!this.byName.has(e.workerName)) this.count++;
    this.byName.set(e.workerName, e);
  }

  /** Lets `name` join again; returns whether it was quarantined. */
  lift(name: string): boolean {
    return this.byName.delete(name);
  }

  list(): Evidence[] {
    return [...this.byName.values()];
  }

  /** Quarantines so far, lifted ones included. */
  total(): number {
    return this.count;
  }
}
