// The forward pass of a layer list on TensorFlow.js tensors. Training mode normalises
// batch-norm layers with the batch's own statistics (returned for the running averages)
// and applies the dropout masks it is given; evaluation mode uses the running statistics.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../backend.js';
import type { Layer } from './layers.js';

export const BATCH_NORM_EPSILON = 1e-5;

export interface ForwardInputs {
  /** Trainable parameters in spec order. */
  readonly params: readonly tfjs.Tensor[];
  /** Running mean/variance per batch-norm layer, in spec order (evaluation mode). */
  readonly buffers: readonly tfjs.Tensor[];
  /** One mask [N, 1, 1, C] per dropout layer (training mode); absent means no dropout. */
  readonly dropoutMasks?: readonly tfjs.Tensor4D[];
}

export interface ForwardResult {
  readonly logits: tfjs.Tensor2D;
  /** Per batch-norm layer: the batch mean and biased variance (training mode only). */
  readonly batchStats: { mean: tfjs.Tensor1D; variance: tfjs.Tensor1D }[];
}

/**
 * Batch norm in training mode with a closed-form gradient:
 * dx = γ·rstd/N · (N·dy − Σdy − x̂·Σ(dy·x̂)). tfjs's generic gradient builds the same
 * through Tile and many broadcasts, which is several times slower on wasm.
 */
function batchNormTrain(tf: Tf, x: tfjs.Tensor4D, gamma: tfjs.Tensor, beta: tfjs.Tensor, mean: tfjs.Tensor, variance: tfjs.Tensor): tfjs.Tensor4D {
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [xIn, gIn, bIn, save] = args as [tfjs.Tensor, tfjs.Tensor, tfjs.Tensor, tfjs.GradSaveFunc];
    const xt = xIn as tfjs.Tensor4D;
    const rstd = tf.rsqrt(tf.add(variance, BATCH_NORM_EPSILON));
    const xhat = tf.mul(tf.sub(xt, mean), rstd);
    save([xhat, rstd, gIn as tfjs.Tensor]);
    const value = tf.add(tf.mul(xhat, gIn as tfjs.Tensor), bIn as tfjs.Tensor) as tfjs.Tensor4D;
    const gradFunc = (dy: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor[] => {
      const [xhatS, rstdS, gammaS] = saved as [tfjs.Tensor, tfjs.Tensor, tfjs.Tensor];
      const axes = [0, 1, 2];
      const n = dy.size / (dy.shape[3] ?? 1);
      const dBeta = tf.sum(dy, axes);
      const dGamma = tf.sum(tf.mul(dy, xhatS), axes);
      const scale = tf.div(tf.mul(gammaS, rstdS), n);
      const dx = tf.mul(scale, tf.sub(tf.sub(tf.mul(dy, n), dBeta), tf.mul(xhatS, dGamma)));
      return [dx, dGamma, dBeta];
    };
    return { value, gradFunc };
  });
  return f(x, gamma, beta) as tfjs.Tensor4D;
}

export function forward(tf: Tf, layers: readonly Layer[], x: tfjs.Tensor4D, inputs: ForwardInputs, training: boolean): ForwardResult {
  let h: tfjs.Tensor = x;
  let p = 0;
  let b = 0;
  let d = 0;
  const batchStats: { mean: tfjs.Tensor1D; variance: tfjs.Tensor1D }[] = [];
  const param = (): tfjs.Tensor => {
    const t = inputs.params[p++];
    if (!t) throw new Error('forward: fewer parameters than layers need');
    return t;
  };
  for (const layer of layers) {
    switch (layer.kind) {
      case 'conv2d': {
        const w = param() as tfjs.Tensor4D;
        const bias = param();
        h = tf.add(tf.conv2d(h as tfjs.Tensor4D, w, 1, 'same'), bias);
        break;
      }
      case 'batchnorm': {
        const gamma = param();
        const beta = param();
        if (training) {
          const { mean, variance } = tf.moments(h, [0, 1, 2]);
          batchStats.push({ mean: mean as tfjs.Tensor1D, variance: variance as tfjs.Tensor1D });
          h = batchNormTrain(tf, h as tfjs.Tensor4D, gamma, beta, mean, variance);
        } else {
          const mean = inputs.buffers[b];
          const variance = inputs.buffers[b + 1];
          if (!mean || !variance) throw new Error('forward: missing batch-norm running statistics');
          h = tf.batchNorm(h as tfjs.Tensor4D, mean, variance, beta, gamma, BATCH_NORM_EPSILON);
        }
        b += 2;
        break;
      }
      case 'tanh':
        h = tf.tanh(h);
        break;
      case 'maxpool2':
        h = tf.maxPool(h as tfjs.Tensor4D, 2, 2, 'valid');
        break;
      case 'dropout2d': {
        const mask = training ? inputs.dropoutMasks?.[d] : undefined;
        if (mask) h = tf.mul(h, mask);
        d++;
        break;
      }
      case 'flatten':
        h = tf.reshape(h, [h.shape[0] ?? -1, -1]);
        break;
      case 'dense': {
        const w = param();
        const bias = param();
        h = tf.add(tf.matMul(h as tfjs.Tensor2D, w as tfjs.Tensor2D), bias);
        break;
      }
    }
  }
  return { logits: h as tfjs.Tensor2D, batchStats };
}
