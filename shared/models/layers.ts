// The recipe's models described as data: an ordered list of layers from which both the
// parameter list and the forward pass are derived, so every backend and every process
// agrees on parameter order and shapes without sharing code paths.

export type Layer =
  | { readonly kind: 'conv2d'; readonly name: string; readonly inChannels: number; readonly outChannels: number; readonly kernel: number }
  | { readonly kind: 'batchnorm'; readonly name: string; readonly channels: number }
  | { readonly kind: 'tanh' }
  | { readonly kind: 'maxpool2' }
  | { readonly kind: 'dropout2d'; readonly rate: number }
  | { readonly kind: 'flatten' }
  | { readonly kind: 'dense'; readonly name: string; readonly inputs: number; readonly units: number };

export const MODEL_NAMES = ['net', 'net-width', 'net-dropout', 'net-batchnorm'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

/** Input images: 32x32 RGB, NHWC. */
export const IMAGE_SIZE = 32;
export const IMAGE_CHANNELS = 3;
export const IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * IMAGE_CHANNELS;
export const NUM_CLASSES = 2;
export const CLASS_NAMES = ['airplane', 'bird'] as const;

const conv = (name: string, inChannels: number, outChannels: number): Layer => ({ kind: 'conv2d', name, inChannels, outChannels, kernel: 3 });
const dense = (name: string, inputs: number, units: number): Layer => ({ kind: 'dense', name, inputs, units });
const TANH: Layer = { kind: 'tanh' };
const POOL: Layer = { kind: 'maxpool2' };
const FLATTEN: Layer = { kind: 'flatten' };

/** `Net` of the recipe (Deep Learning with PyTorch, ch. 8). 18,090 parameters. */
function net(): Layer[] {
  return [conv('conv1', 3, 16), TANH, POOL, conv('conv2', 16, 8), TANH, POOL, FLATTEN, dense('fc1', 8 * 8 * 8, 32), TANH, dense('fc2', 32, 2)];
}

/**
 * `NetWidth` (n_chans1 = 32). The book's forward skips conv2, which would make its `view`
 * fail; this is the intended conv1 -> tanh -> pool -> conv2 -> tanh -> pool network.
 */
function netWidth(c = 32): Layer[] {
  return [conv('conv1', 3, c), TANH, POOL, conv('conv2', c, c / 2), TANH, POOL, FLATTEN, dense('fc1', 8 * 8 * (c / 2), 32), TANH, dense('fc2', 32, 2)];
}

/** `NetDropout`: NetWidth with Dropout2d(p = 0.4) after each conv block (conv2 included, see NetWidth). */
function netDropout(c = 32, rate = 0.4): Layer[] {
  const drop: Layer = { kind: 'dropout2d', rate };
  return [conv('conv1', 3, c), TANH, POOL, drop, conv('conv2', c, c / 2), TANH, POOL, drop, FLATTEN, dense('fc1', 8 * 8 * (c / 2), 32), TANH, dense('fc2', 32, 2)];
}

/** `NetBatchNorm`: BatchNorm2d after each convolution, before tanh. */
function netBatchNorm(c = 32): Layer[] {
  return [
    conv('conv1', 3, c), { kind: 'batchnorm', name: 'conv1_batchnorm', channels: c }, TANH, POOL,
    conv('conv2', c, c / 2), { kind: 'batchnorm', name: 'conv2_batchnorm', channels: c / 2 }, TANH, POOL,
    FLATTEN, dense('fc1', 8 * 8 * (c / 2), 32), TANH, dense('fc2', 32, 2),
  ];
}

export function modelLayers(name: ModelName): Layer[] {
  switch (name) {
    case 'net': return net();
    case 'net-width': return netWidth();
    case 'net-dropout': return netDropout();
    case 'net-batchnorm': return netBatchNorm();
  }
}

export function isModelName(value: string): value is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(value);
}
