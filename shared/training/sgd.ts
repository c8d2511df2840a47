// SGD with PyTorch's semantics: d = g + wd·w; with momentum, buf = μ·buf + d (buf = d on the
// first step); w −= lr·buf. Runs on plain arrays so every backend shares one optimiser.
export interface SgdOptions {
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
}

export interface SgdState {
  /** Momentum buffers, one per parameter; empty until the first step with momentum. */
  momentum: Float32Array[];
}

export function sgdStep(params: Float32Array[], grads: readonly Float32Array[], state: SgdState, opts: SgdOptions): void {
  const { lr, momentum, weightDecay } = opts;
  const first = state.momentum.length === 0;
  if (momentum !== 0 && first) state.momentum = params.map((p) => new Float32Array(p.length));
  // One loop per case, with the same float operations in the same order as the general rule
  // above (so the same bits): this runs on the coordinator between a step's last gradient and
  // the next step's weights, and a branch per element made it several times slower.
  for (let k = 0; k < params.length; k++) {
    const w = params[k]!;
    const g = grads[k]!;
    const buf = state.momentum[k];
    const n = w.length;
    if (!buf) {
      for (let i = 0; i < n; i++) w[i] = w[i]! - lr * Math.fround(g[i]! + weightDecay * w[i]!);
    } else if (first) {
      for (let i = 0; i < n; i++) {
        buf[i] = g[i]! + weightDecay * w[i]!;
        w[i] = w[i]! - lr * buf[i]!;
      }
    } else {
      for (let i = 0; i < n; i++) {
        buf[i] = momentum * buf[i]! + Math.fround(g[i]! + weightDecay * w[i]!);
        w[i] = w[i]! - lr * buf[i]!;
      }
    }
  }
}

/** Batch-norm running averages: r = (1 − m)·r + m·batch, PyTorch's momentum convention. */
export const BATCH_NORM_MOMENTUM = 0.1;
export function updateRunning(running: Float32Array, batch: Float32Array): void {
  for (let c = 0; c < running.length; c++) running[c] = (1 - BATCH_NORM_MOMENTUM) * running[c]! + BATCH_NORM_MOMENTUM * batch[c]!;
}
