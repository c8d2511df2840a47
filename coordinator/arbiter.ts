// The coordinator's own computation of a unit, on its in-process backend (issue 12): the
// second computation of an audit when no other worker is there, and the computation that
// settles a disagreement between two results (or checks a result that failed a guard).
import { subset, type Dataset } from '../shared/data/cifar.js';
import type { EvalResult, GradientResult, ModelRuntime } from '../shared/models/runtime.js';
import type { ModelState } from '../shared/models/spec.js';
import { dropoutSeed, type MicroBatch } from '../shared/training/schedule.js';
import type { Split } from './executor.js';

export class Arbiter {
  /** The weights the runtime holds (identity of the scheduler's weights record). */
  private holds: object | undefined;

  constructor(
    private readonly runtime: ModelRuntime,
    private readonly data: { readonly train: Dataset; readonly validation: Dataset },
    private readonly seed: number,
    /** The backend's name, to know when results must be bit-identical to a worker's. */
    readonly backend: string,
  ) {}

  /** @param key identifies `state`: the runtime loads it only when the key changes */
  private use(state: ModelState, key: object): void {
    if (this.holds === key) return;
    this.runtime.setState(state);
    this.holds = key;
  }

  gradient(state: ModelState, key: object, step: number, mb: MicroBatch): Promise<GradientResult> {
    this.use(state, key);
    return this.runtime.gradients(subset(this.data.train, mb.indices), dropoutSeed(this.seed, step, mb.id));
  }

  evaluate(state: ModelState, key: object, split: Split, chunk: MicroBatch): Promise<EvalResult> {
    this.use(state, key);
    return this.runtime.evaluate(subset(this.data[split], chunk.indices));
  }
}
