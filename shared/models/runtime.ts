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

  /**
   * Gradient of the summed loss over a micro-batch; `dropoutSeed` fixes the dropout masks.
   * Async because results are read with `data()`: the webgpu backend cannot be read
   * synchronously in Node (its dataSync goes through OffscreenCanvas).
   */
  async gradients(batch: Batch, dropoutSeed: number): Promise<GradientResult> {
    const { tf, model } = this;
    const count = batch.count;
    // The graph runs in tidy; the tensors to read are kept out of it and disposed below.
    const kept: tfjs.Tensor[] = [];
    const keep = <T extends tfjs.Tensor>(t: T): T => (kept.push(tf.keep(t)), t);
    let logits: tfjs.Tensor | undefined;
    let stats: { mean: tfjs.Tensor; variance: tfjs.Tensor }[] = [];
    let value: tfjs.Tensor | undefined;
    let grads: tfjs.Tensor[] = [];
    try {
      tf.tidy(() => {
        const x = this.input(batch, 0, count);
        const targets = this.oneHot(batch.labels, 0, count);
        const masks = dropoutMasks(model.layers, count, dropoutSeed).map((m, k) =>
          tf.tensor4d(m, [count, 1, 1, this.dropoutLayerChannels[k]!]));
        const f = (...params: tfjs.Tensor[]): tfjs.Scalar => {
          const out = forward(tf, model.layers, x, { params, buffers: this.buffers, dropoutMasks: masks }, true);
          logits = keep(out.logits);
          stats = out.batchStats.map((s) => ({ mean: keep(s.mean), variance: keep(s.variance) }));
          return this.lossSum(out.logits, targets);
        };
        const r = tf.valueAndGrads(f)(this.params);
        value = keep(r.value);
        grads = r.grads.map(keep);
      });
      const read = (t: tfjs.Tensor): Promise<Float32Array> => t.data() as Promise<Float32Array>;
      const [logitValues, lossValue, gradValues, statValues] = await Promise.all([
        read(logits!),
        read(value!),
        Promise.all(grads.map(read)),
        Promise.all(stats.map(async (s) => ({ mean: await read(s.mean), variance: await read(s.variance) }))),
      ]);
      return {
        grads: gradValues,
        lossSum: lossValue[0]!,
        correct: ModelRuntime.countCorrect(logitValues, batch.labels, 0, count),
        count,
        batchStats: statValues,
      };
    } finally {
      for (const t of kept) t.dispose();
    }
  }

  /** Loss and accuracy in evaluation mode (running batch-norm statistics, no dropout). */
  async evaluate(batch: Batch): Promise<EvalResult> {
    let lossSum = 0;
    let correct = 0;
    for (let offset = 0; offset < batch.count; offset += EVAL_CHUNK) {
      const n = Math.min(EVAL_CHUNK, batch.count - offset);
      const [logits, loss] = this.tf.tidy(() => {
        const l = this.logits(batch, offset, n);
        return [l, this.lossSum(l, this.oneHot(batch.labels, offset, n))];
      });
      try {
        const [logitValues, lossValue] = await Promise.all([logits.data() as Promise<Float32Array>, loss.data()]);
        lossSum += lossValue[0]!;
        correct += ModelRuntime.countCorrect(logitValues, batch.labels, offset, n);
      } finally {
        logits.dispose();
        loss.dispose();
      }
    }
    return { lossSum, correct, count: batch.count };
  }

  /** Class probabilities, [count x NUM_CLASSES] row-major. */
  async predict(images: Uint8Array, count: number): Promise<Float32Array> {
    const batch: Batch = { images, labels: new Uint8Array(count), count };
    const out = new Float32Array(count * NUM_CLASSES);
    for (let offset = 0; offset < count; offset += EVAL_CHUNK) {
      const n = Math.min(EVAL_CHUNK, count - offset);
      const probs = this.tf.tidy(() => this.tf.softmax(this.logits(batch, offset, n)));
      try {
        out.set(await probs.data(), offset * NUM_CLASSES);
      } finally {
        probs.dispose();
      }
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
