// The in-process executor: the same ModelRuntime the workers run, called directly.
// Used by `coordinator start --local`, `evaluate`, and as the reference in tests.
import type { Clock } from '../shared/clock.js';
import { subset, type Dataset } from '../shared/data/cifar.js';
import type { EvalResult, GradientResult, ModelRuntime } from '../shared/models/runtime.js';
import type { MicroBatch } from '../shared/training/schedule.js';
import { dropoutSeed } from '../shared/training/schedule.js';
import { reduceStep } from '../shared/training/reduce.js';
import type { Executor, GradientsOutcome, Split, StepWork, VersionedState } from './executor.js';

export class LocalExecutor implements Executor {
  private version = -1;

  constructor(
    private readonly runtime: ModelRuntime,
    private readonly train: Dataset,
    private readonly validation: Dataset,
    private readonly seed: number,
    private readonly clock: Clock,
  ) {}

  workerCount(): number {
    return 1;
  }

  private use(weights: VersionedState): void {
    if (weights.version !== this.version) {
      this.runtime.setState(weights.state);
      this.version = weights.version;
    }
  }

  async gradients(work: StepWork, weights: VersionedState): Promise<GradientsOutcome> {
    const start = this.clock.now();
    this.use(weights);
    // One micro-batch at a time, in order, as a worker computes them.
    const results: GradientResult[] = [];
    for (const mb of work.microBatches) {
      results.push(await this.runtime.gradients(subset(this.train, mb.indices), dropoutSeed(this.seed, work.globalStep, mb.id)));
    }
    return { results, reduced: reduceStep(results, work.reduceGroup ?? 0), timing: { computeMs: this.clock.now() - start, communicationMs: 0, waitingMs: 0 } };
  }

  async evaluate(split: Split, chunks: readonly MicroBatch[], weights: VersionedState): Promise<EvalResult[]> {
    this.use(weights);
    const data = split === 'train' ? this.train : this.validation;
    const results: EvalResult[] = [];
    for (const c of chunks) results.push(await this.runtime.evaluate(subset(data, c.indices)));
    return results;
  }
}
