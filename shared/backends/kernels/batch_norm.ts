// Batch norm in training mode as two Flock-only kernels in WebAssembly SIMD (wasm-src,
// `batchNormStats`/`batchNormApply`/`batchNormGrad`). Built from tfjs ops, the forward and
// backward passes of one batch-norm layer take some twenty kernels (channel means through
// AvgPool, broadcasting Sub/Multiply/Add, Square, Rsqrt), each a full pass over the
// activation; these take three passes forward and two backward, and also take the bias of
// the convolution before the batch norm (its Add and its gradient's reduction). Same closed form as
// shared/models/forward.ts, which uses them where the active backend registers them.
import type { Tf } from '../../backend.js';
import type { FlockWasm } from './flock_wasm.js';
import { floatMemory, type KernelArgs, type KernelConfig, type TensorInfo } from './util.js';

/**
 * inputs {x [N,H,W,C], gamma [C], beta [C], bias? [C]} (bias: a convolution's, added to x
 * first), attrs {epsilon}; outputs [y, x̂, γ·rstd, mean, biased variance].
 */
export const FLOCK_BATCH_NORM_TRAIN = 'FlockBatchNormTrain';
/** inputs {dy, xhat, scale}; outputs [dx, dγ, dβ, Σdx per channel (the bias's gradient)]. */
export const FLOCK_BATCH_NORM_GRAD = 'FlockBatchNormGrad';

function dims(t: TensorInfo, what: string): [number, number, number, number] {
  if (t.dtype !== 'float32' || t.shape.length !== 4) throw new Error(`${what}: a float32 NHWC tensor is required`);
  return t.shape as [number, number, number, number];
}

export function batchNormTrainKernel(flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend, attrs }: KernelArgs): TensorInfo[] => {
    const { x, gamma, beta, bias } = inputs as unknown as { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo; bias?: TensorInfo };
    const { epsilon } = attrs as unknown as { epsilon: number };
    const [n, h, w, c] = dims(x, FLOCK_BATCH_NORM_TRAIN);
    const mem = floatMemory('wasm', backend);
    const y = mem.alloc([n, h, w, c]);
    const xhat = mem.alloc([n, h, w, c]);
    const scale = mem.alloc([c]);
    const mean = mem.alloc([c]);
    const variance = mem.alloc([c]);
    const scratch = mem.alloc([8 * c]);
    const f = flock(backend);
    const biasPtr = bias ? f.ptr(bias) : 0;
    f.exports.batchNormStats(f.ptr(x), biasPtr, n * h, w, c, f.ptr(mean), f.ptr(variance), f.ptr(scratch));
    f.exports.batchNormApply(f.ptr(x), biasPtr, n * h * w, c, f.ptr(mean), f.ptr(variance), f.ptr(gamma), f.ptr(beta), epsilon, f.ptr(y), f.ptr(xhat), f.ptr(scale), f.ptr(scratch));
    mem.dispose(scratch);
    return [y, xhat, scale, mean, variance];
  };
  return { kernelName: FLOCK_BATCH_NORM_TRAIN, backendName: 'wasm', kernelFunc };
}

export function batchNormGradKernel(flock: (backend: unknown) => FlockWasm): KernelConfig {
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo[] => {
    const { dy, xhat, scale } = inputs as unknown as { dy: TensorInfo; xhat: TensorInfo; scale: TensorInfo };
    const [n, h, w, c] = dims(dy, FLOCK_BATCH_NORM_GRAD);
    const mem = floatMemory('wasm', backend);
    const dx = mem.alloc([n, h, w, c]);
    const dgamma = mem.alloc([c]);
    const dbeta = mem.alloc([c]);
    const dbias = mem.alloc([c]);
    const scratch = mem.alloc([12 * c]);
    const f = flock(backend);
    f.exports.batchNormGrad(f.ptr(dy), f.ptr(xhat), f.ptr(scale), n * h, w, c, f.ptr(dx), f.ptr(dgamma), f.ptr(dbeta), f.ptr(dbias), f.ptr(scratch));
    mem.dispose(scratch);
    return [dx, dgamma, dbeta, dbias];
  };
  return { kernelName: FLOCK_BATCH_NORM_GRAD, backendName: 'wasm', kernelFunc };
}

/** Whether the active backend has Flock's batch-norm kernels (so far only wasm). */
export function hasFlockBatchNorm(tf: Tf): boolean {
  return tf.getKernel(FLOCK_BATCH_NORM_TRAIN, tf.getBackend()) !== undefined && tf.getKernel(FLOCK_BATCH_NORM_GRAD, tf.getBackend()) !== undefined;
}
