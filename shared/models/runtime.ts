// A model bound to one compute backend: gradients of a micro-batch, evaluation and
// prediction. Workers and the in-process trainer both use exactly this class; weights
// come in and gradients go out as plain Float32Arrays, so the optimiser and the
// reduction run the same JS code whichever backend computed them.
import type * as tfjs from '@tensorflow/tfjs';
import type { ComputeBackend, Tf } from '../backend.js';
import { forward } from './forward.js';
import { dropoutMasks, dropoutChannels, normalizeImages } from './inputs.js';
import { IMAGE_SIZE, IMAGE_CHANNELS, NUM_CLASSES } from './layers.js';
import type { ModelSpec, ModelState } from './spec.js';

/** Images as NHWC uint8 pixels with one label (0 or 1) each. */
export interface Batch {
  readonly images: Uint8Array;
  readonly labels: Uint8Array;
  readonly count: number;
}

export interface BatchStats {
  readonly mean: Float32Array;
  /** Biased (population) variance of the micro-batch. */
  readonly variance: Float32Array;
}

export interface GradientResult {
  /** Gradient of the summed (not averaged) loss, per parameter in spec order. */
  readonly grads: Float32Array[];
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  readonly batchStats: BatchStats[];
}

export interface EvalResult {
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
}

const EVAL_CHUNK = 500;

export class ModelRuntime {
  private readonly tf: Tf;
  private params: tfjs.Tensor[] = [];
  private buffers: tfjs.Tensor[] = [];
  private readonly dropoutLayerChannels: number[];

  constructor(backend: ComputeBackend, readonly model: ModelSpec) {
    this.tf = backend.tf;
    this.dropoutLayerChannels = dropoutChannels(model.layers);
  }

  /** Replaces the weights and running statistics the next computations use. */
  setState(state: ModelState): void {
    const { tf, model } = this;
    if (state.params.length !== model.params.length || state.buffers.length !== model.buffers.length) {
      throw new Error(`setState: state does not match model ${model.name}`);
    }
    const params = model.params.map((p, i) => tf.tensor(state.params[i]!, [...p.shape], 'float32'));
    const buffers = model.buffers.map((b, i) => tf.tensor(state.buffers[i]!, [...b.shape], 'float32'));
    this.disposeState();
    this.params = params;
    this.buffers = buffers;
  }

  private input(batch: Batch, offset: number, count: number): tfjs.Tensor4D {
    const bytes = IMAGE_SIZE * IMAGE_SIZE * IMAGE_CHANNELS;
    const pixels = batch.images.subarray(offset * bytes, (offset + count) * bytes);
    return this.tf.tensor4d(normalizeImages(pixels, count), [count, IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS]);
  }

  private oneHot(labels: Uint8Array, offset: number, count: number): tfjs.Tensor2D {
    const data = new Float32Array(count * NUM_CLASSES);
    for (let i = 0; i < count; i++) data[i * NUM_CLASSES + labels[offset + i]!] = 1;
    return this.tf.tensor2d(data, [count, NUM_CLASSES]);
  }

  /** Summed cross-entropy of logits against one-hot targets. */
  private lossSum(logits: tfjs.Tensor2D, targets: tfjs.Tensor2D): tfjs.Scalar {
    const tf = this.tf;
    const logProbs = tf.sub(logits, tf.logSumExp(logits, 1, true));
    return tf.neg(tf.sum(tf.mul(logProbs, targets))) as tfjs.Scalar;
  }

  private static countCorrect(logits: Float32Array, labels: Uint8Array, offset: number, count: number): number {
    let correct = 0;
    for (let i = 0; i < count; i++) {
      let best = 0;
      for (let k = 1; k < NUM_CLASSES; k++) if (logits[i * NUM_CLASSES + k]! > logits[i * NUM_CLASSES + best]!) best = k;
      if (best === labels[offset + i]) correct++;
    }
    return correct;
  }

  /** Gradient of the summed loss over a micro-batch; `dropoutSeed` fixes the dropout masks. */
  gradients(batch: Batch, dropoutSeed: number): GradientResult {
    const { tf, model } = this;
    const count = batch.count;
    let result: GradientResult | undefined;
    tf.tidy(() => {
      const x = this.input(batch, 0, count);
      const targets = this.oneHot(batch.labels, 0, count);
      const masks = dropoutMasks(model.layers, count, dropoutSeed).map((m, k) =>
        tf.tensor4d(m, [count, 1, 1, this.dropoutLayerChannels[k]!]));
      let logits: Float32Array = new Float32Array(0);
      let stats: BatchStats[] = [];
      const f = (...params: tfjs.Tensor[]): tfjs.Scalar => {
        const out = forward(tf, model.layers, x, { params, buffers: this.buffers, dropoutMasks: masks }, true);
        logits = out.logits.dataSync() as Float32Array;
        stats = out.batchStats.map((s) => ({ mean: s.mean.dataSync() as Float32Array, variance: s.variance.dataSync() as Float32Array }));
        return this.lossSum(out.logits, targets);
      };
      const { value, grads } = tf.valueAndGrads(f)(this.params);
      result = {
        grads: grads.map((g) => g.dataSync() as Float32Array),
        lossSum: value.dataSync()[0]!,
        correct: ModelRuntime.countCorrect(logits, batch.labels, 0, count),
        count,
        batchStats: stats,
      };
    });
    return result!;
  }

  /** Loss and accuracy in evaluation mode (running batch-norm statistics, no dropout). */
  evaluate(batch: Batch): EvalResult {
    let lossSum = 0;
    let correct = 0;
    for (let offset = 0; offset < batch.count; offset += EVAL_CHUNK) {
      const n = Math.min(EVAL_CHUNK, batch.count - offset);
      this.tf.tidy(() => {
        const logits = this.logits(batch, offset, n);
        lossSum += this.lossSum(logits, this.oneHot(batch.labels, offset, n)).dataSync()[0]!;
        correct += ModelRuntime.countCorrect(logits.dataSync() as Float32Array, batch.labels, offset, n);
      });
    }
    return { lossSum, correct, count: batch.count };
  }

  /** Class probabilities, [count x NUM_CLASSES] row-major. */
  predict(images: Uint8Array, count: number): Float32Array {
    const batch: Batch = { images, labels: new Uint8Array(count), count };
    const out = new Float32Array(count * NUM_CLASSES);
    for (let offset = 0; offset < count; offset += EVAL_CHUNK) {
      const n = Math.min(EVAL_CHUNK, count - offset);
      this.tf.tidy(() => {
        out.set(this.tf.softmax(this.logits(batch, offset, n)).dataSync(), offset * NUM_CLASSES);
      });
    }
    return out;
  }

  private logits(batch: Batch, offset: number, count: number): tfjs.Tensor2D {
    return forward(this.tf, this.model.layers, this.input(batch, offset, count), { params: this.params, buffers: this.buffers }, false).logits;
  }

  private disposeState(): void {
    for (const t of this.params) t.dispose();
    for (const t of this.buffers) t.dispose();
    this.params = [];
    this.buffers = [];
  }

  dispose(): void {
    this.disposeState();
  }
}
