// The forward pass of a layer list on TensorFlow.js tensors. Training mode normalises
// batch-norm layers with the batch's own statistics (returned for the running averages)
// and applies the dropout masks it is given; evaluation mode uses the running statistics.
// In training mode, where the active backend registers Flock's fused kernels (wasm), runs
// of layers become one op each with its own gradient: conv bias + tanh (+ 2x2 max pool),
// batch norm (+ the conv bias before it) (+ tanh + max pool); elsewhere the same math runs
// as tfjs ops.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../backend.js';
import { FLOCK_BATCH_NORM_GRAD, FLOCK_BATCH_NORM_TRAIN, hasFlockBatchNorm } from '../backends/kernels/batch_norm.js';
import { FLOCK_BIAS_TANH } from '../backends/kernels/tanh.js';
import { FLOCK_TANH_GRAD, hasFlockTanhGrad } from '../backends/kernels/tanh_grad.js';
import { FLOCK_TANH_MAX_POOL_GRAD, hasFlockTanhMaxPoolGrad } from '../backends/kernels/tanh_max_pool_grad.js';
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
 * Batch norm in training mode over [N, H, W, C], normalising with the batch's own mean and
 * biased variance (returned for the running averages), with a closed-form gradient:
 * dx = γ·rstd · (dy − mean(dy) − x̂·mean(dy·x̂)), dγ = M·mean(dy·x̂), dβ = M·mean(dy),
 * M = N·H·W. Per-channel means are an average pool over each whole image followed by a mean
 * over the batch: one fast pass on every backend (XNNPACK on wasm), where tf.sum/tf.moments
 * over axes [0, 1, 2] transpose first on wasm; and nothing goes through tfjs's generic
 * batchNorm gradient (Tile and many broadcasts).
 */
function channelMean(tf: Tf, t: tfjs.Tensor4D): tfjs.Tensor4D {
  const [, h, w] = t.shape;
  return tf.mean<tfjs.Tensor4D>(tf.avgPool(t, [h, w], 1, 'valid'), 0, true);
}

/**
 * x + bias over the channels of [N, H, W, C], with dbias = M·channelMean(dy): tfjs's Add
 * gradient reduces with tf.sum over axes [0, 1, 2], a transpose plus a sum on wasm.
 */
function addChannelBias(tf: Tf, x: tfjs.Tensor4D, bias: tfjs.Tensor): tfjs.Tensor4D {
  const c = x.shape[3];
  const m = x.size / c;
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [xIn, bIn] = args as [tfjs.Tensor4D, tfjs.Tensor];
    const gradFunc = (dy: tfjs.Tensor): tfjs.Tensor[] => [dy, tf.reshape(tf.mul(channelMean(tf, dy as tfjs.Tensor4D), m), [c])];
    return { value: tf.add<tfjs.Tensor4D>(xIn, bIn), gradFunc };
  });
  return f(x, bias);
}

/**
 * tanh whose gradient, (1 − y²)·dy, is one FlockTanhGrad kernel where the backend has it
 * (bit-identical to tfjs's Square, Sub, Multiply); tfjs's own gradient elsewhere.
 */
function tanh(tf: Tf, x: tfjs.Tensor): tfjs.Tensor {
  if (!hasFlockTanhGrad(tf)) return tf.tanh(x);
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [xIn, save] = args as [tfjs.Tensor, tfjs.GradSaveFunc];
    const y = tf.tanh(xIn);
    save([y]);
    const gradFunc = (dy: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor =>
      tf.engine().runKernel<tfjs.Tensor>(FLOCK_TANH_GRAD, { y: saved[0]!, dy });
    return { value: y, gradFunc };
  });
  return f(x);
}

/**
 * tanh(x + bias) over the channels of [N, H, W, C] as one FlockBiasTanh kernel (training
 * mode, where the backend has it and FlockTanhGrad): dx = (1 − y²)·dy, dbias = M·channelMean(dx)
 * as in addChannelBias. Bit-identical to addChannelBias followed by tanh.
 */
function hasFlockBiasTanh(tf: Tf): boolean {
  return hasFlockTanhGrad(tf) && tf.getKernel(FLOCK_BIAS_TANH, tf.getBackend()) !== undefined;
}

function biasTanh(tf: Tf, x: tfjs.Tensor4D, bias: tfjs.Tensor): tfjs.Tensor4D {
  const c = x.shape[3];
  const m = x.size / c;
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [xIn, bIn, save] = args as [tfjs.Tensor4D, tfjs.Tensor, tfjs.GradSaveFunc];
    const y = tf.engine().runKernel<tfjs.Tensor4D>(FLOCK_BIAS_TANH, { x: xIn, bias: bIn });
    save([y]);
    const gradFunc = (dy: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor[] => {
      const dx = tf.engine().runKernel<tfjs.Tensor4D>(FLOCK_TANH_GRAD, { y: saved[0]!, dy });
      return [dx, tf.reshape(tf.mul(channelMean(tf, dx), m), [c])];
    };
    return { value: y, gradFunc };
  });
  return f(x, bias);
}

/**
 * maxPool2(tanh(x + bias)) (bias optional) whose backward pass is one FlockTanhMaxPoolGrad
 * kernel: dx = (1 − y²)·(dp routed to each window's first maximum), dbias = Σ dx per channel.
 * Training mode, where the backend has the Flock kernels; tanh's output y is saved.
 */
function tanhMaxPool(tf: Tf, x: tfjs.Tensor4D, bias: tfjs.Tensor | undefined): tfjs.Tensor4D {
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const xIn = args[0] as tfjs.Tensor4D;
    const bIn = bias ? args[1] as tfjs.Tensor : undefined;
    const save = args[args.length - 1] as tfjs.GradSaveFunc;
    const y = bIn ? tf.engine().runKernel<tfjs.Tensor4D>(FLOCK_BIAS_TANH, { x: xIn, bias: bIn }) : tf.tanh(xIn);
    save([y]);
    const gradFunc = (dp: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor[] => {
      const [dx, dbias] = tf.engine().runKernel<tfjs.Tensor[]>(FLOCK_TANH_MAX_POOL_GRAD, { y: saved[0]!, dy: dp });
      return bIn ? [dx!, dbias!] : [dx!];
    };
    return { value: tf.maxPool(y, 2, 2, 'valid'), gradFunc };
  });
  return bias ? f(x, bias) : f(x);
}

function batchNormTrain(tf: Tf, x: tfjs.Tensor4D, gamma: tfjs.Tensor, beta: tfjs.Tensor):
  { y: tfjs.Tensor4D; mean: tfjs.Tensor1D; variance: tfjs.Tensor1D } {
  if (hasFlockBatchNorm(tf)) return batchNormTrainFused(tf, x, gamma, beta);
  const c = x.shape[3];
  const m = x.size / c;
  // The statistics are computed outside the custom-gradient function (tensors made inside
  // it do not outlive it) and reach it by closure, so no gradient flows through them: the
  // closed form already accounts for their dependence on x.
  const mean = channelMean(tf, x); // [1, 1, 1, C]
  const centered = tf.sub<tfjs.Tensor4D>(x, mean);
  const variance = channelMean(tf, tf.square(centered));
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const [, gIn, bIn, save] = args as [tfjs.Tensor, tfjs.Tensor, tfjs.Tensor, tfjs.GradSaveFunc];
    const rstd = tf.rsqrt(tf.add(variance, BATCH_NORM_EPSILON));
    const xhat = tf.mul(centered, rstd);
    const scale = tf.mul(gIn, rstd); // γ·rstd
    save([xhat, scale]);
    const value = tf.add<tfjs.Tensor4D>(tf.mul(xhat, gIn), bIn);
    const gradFunc = (dy: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor[] => {
      const [xhatS, scaleS] = saved as [tfjs.Tensor4D, tfjs.Tensor4D];
      const dy4 = dy as tfjs.Tensor4D;
      const meanDy = channelMean(tf, dy4);
      const meanDyXhat = channelMean(tf, tf.mul(dy4, xhatS));
      const dx = tf.mul(tf.sub(tf.sub(dy4, tf.mul(xhatS, meanDyXhat)), meanDy), scaleS);
      return [dx, tf.reshape(tf.mul(meanDyXhat, m), [c]), tf.reshape(tf.mul(meanDy, m), [c])];
    };
    return { value, gradFunc };
  });
  const y = f(x, gamma, beta);
  return { y, mean: tf.reshape<tfjs.Rank.R1>(mean, [c]), variance: tf.reshape<tfjs.Rank.R1>(variance, [c]) };
}

/**
 * The same closed form in two Flock kernels (forward: statistics, x̂, y; backward: dx, dγ,
 * dβ), optionally with the bias of the convolution before it folded in (x + bias, and
 * dbias = Σ dx). The forward kernel runs outside the custom-gradient function so that the
 * statistics outlive it; the function's value is a (zero-copy) clone of y, so the gradient
 * reaches x, γ, β (and the bias) through gradFunc only.
 */
function batchNormTrainFused(tf: Tf, x: tfjs.Tensor4D, gamma: tfjs.Tensor, beta: tfjs.Tensor, bias?: tfjs.Tensor):
  { y: tfjs.Tensor4D; mean: tfjs.Tensor1D; variance: tfjs.Tensor1D } {
  const outs = tf.engine().runKernel<tfjs.Tensor[]>(FLOCK_BATCH_NORM_TRAIN, bias ? { x, gamma, beta, bias } : { x, gamma, beta }, { epsilon: BATCH_NORM_EPSILON });
  const [yFused, xhat, scale, mean, variance] = outs as [tfjs.Tensor4D, tfjs.Tensor4D, tfjs.Tensor1D, tfjs.Tensor1D, tfjs.Tensor1D];
  const f = tf.customGrad((...args: (tfjs.Tensor | tfjs.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tfjs.GradSaveFunc;
    save([xhat, scale]);
    const gradFunc = (dy: tfjs.Tensor, saved: tfjs.Tensor[]): tfjs.Tensor[] => {
      const [dx, dgamma, dbeta, dbias] = tf.engine().runKernel<tfjs.Tensor[]>(FLOCK_BATCH_NORM_GRAD, { dy, xhat: saved[0]!, scale: saved[1]! });
      return bias ? [dx!, dgamma!, dbeta!, dbias!] : [dx!, dgamma!, dbeta!];
    };
    return { value: tf.clone(yFused), gradFunc };
  });
  return { y: bias ? f(x, gamma, beta, bias) : f(x, gamma, beta), mean, variance };
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
  const fuseBiasTanh = training && hasFlockBiasTanh(tf);
  const fuseTanhPool = fuseBiasTanh && hasFlockTanhMaxPoolGrad(tf);
  // tanh then maxpool2 after this layer: fused into one op with one backward kernel
  const tanhPoolFollows = (index: number): boolean => fuseTanhPool && layers[index + 1]?.kind === 'tanh' && layers[index + 2]?.kind === 'maxpool2';
  let skip = 0; // layers already applied by a fused op
  // A convolution's bias is added by the fused batch-norm kernel right after it.
  const fuseBatchNorm = training && hasFlockBatchNorm(tf);
  let pendingBias: tfjs.Tensor | undefined;
  for (const [index, layer] of layers.entries()) {
    if (skip > 0) {
      skip--;
      continue;
    }
    switch (layer.kind) {
      case 'conv2d': {
        const w = param() as tfjs.Tensor4D;
        const bias = param();
        const conv = tf.conv2d(h as tfjs.Tensor4D, w, 1, 'same');
        if (tanhPoolFollows(index)) {
          h = tanhMaxPool(tf, conv, bias);
          skip = 2;
        } else if (fuseBatchNorm && layers[index + 1]?.kind === 'batchnorm') {
          h = conv;
          pendingBias = bias;
        } else if (fuseBiasTanh && layers[index + 1]?.kind === 'tanh') {
          h = biasTanh(tf, conv, bias);
          skip = 1;
        } else {
          h = addChannelBias(tf, conv, bias);
        }
        break;
      }
      case 'batchnorm': {
        const gamma = param();
        const beta = param();
        if (training) {
          const { y, mean, variance } = pendingBias ?
            batchNormTrainFused(tf, h as tfjs.Tensor4D, gamma, beta, pendingBias) : batchNormTrain(tf, h as tfjs.Tensor4D, gamma, beta);
          pendingBias = undefined;
          batchStats.push({ mean, variance });
          h = y;
          if (tanhPoolFollows(index)) {
            h = tanhMaxPool(tf, y, undefined);
            skip = 2;
          }
        } else {
          const mean = inputs.buffers[b];
          const variance = inputs.buffers[b + 1];
          if (!mean || !variance) throw new Error('forward: missing batch-norm running statistics');
          h = tf.batchNorm(h, mean, variance, beta, gamma, BATCH_NORM_EPSILON);
        }
        b += 2;
        break;
      }
      case 'tanh':
        h = training ? tanh(tf, h) : tf.tanh(h);
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
