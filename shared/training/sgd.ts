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
  params.forEach((w, k) => {
    const g = grads[k]!;
    const buf = state.momentum[k];
    for (let i = 0; i < w.length; i++) {
      const d = Math.fround(g[i]! + weightDecay * w[i]!);
      if (buf) {
        buf[i] = first ? d : Math.fround(momentum * buf[i]! + d);
        w[i] = w[i]! - lr * buf[i]!;
      } else {
        w[i] = w[i]! - lr * d;
      }
    }
  });
}

/** Batch-norm running averages: r = (1 − m)·r + m·batch, PyTorch's momentum convention. */
export const BATCH_NORM_MOMENTUM = 0.1;
export function updateRunning(running: Float32Array, batch: Float32Array): void {
  for (let c = 0; c < running.length; c++) running[c] = (1 - BATCH_NORM_MOMENTUM) * running[c]! + BATCH_NORM_MOMENTUM * batch[c]!;
}
