// Parameter and buffer lists derived from a model's layers, and PyTorch-style initialisation.
import { Rng, mixSeed } from '../random.js';
import { modelLayers, type Layer, type ModelName } from './layers.js';

export type InitKind = 'pytorch-uniform' | 'ones' | 'zeros';

export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly size: number;
  readonly init: InitKind;
  /** fan_in for PyTorch's default uniform(±1/sqrt(fan_in)) initialisation. */
  readonly fanIn: number;
}

export interface ModelSpec {
  readonly name: ModelName;
  readonly layers: readonly Layer[];
  /** Trainable parameters, in the order every gradient and weight list uses. */
  readonly params: readonly TensorSpec[];
  /** Non-trainable state: batch-norm running mean and variance. */
  readonly buffers: readonly TensorSpec[];
  readonly parameterCount: number;
}

/** Weights and buffers of a model as plain arrays: what checkpoints and the wire carry. */
export interface ModelState {
  readonly params: Float32Array[];
  readonly buffers: Float32Array[];
}

const spec = (name: string, shape: number[], init: InitKind, fanIn = 0): TensorSpec =>
  ({ name, shape, size: shape.reduce((a, b) => a * b, 1), init, fanIn });

export function modelSpec(name: ModelName): ModelSpec {
  const layers = modelLayers(name);
  const params: TensorSpec[] = [];
  const buffers: TensorSpec[] = [];
  for (const layer of layers) {
    switch (layer.kind) {
      case 'conv2d': {
        const fanIn = layer.inChannels * layer.kernel * layer.kernel;
        params.push(spec(`${layer.name}.weight`, [layer.kernel, layer.kernel, layer.inChannels, layer.outChannels], 'pytorch-uniform', fanIn));
        params.push(spec(`${layer.name}.bias`, [layer.outChannels], 'pytorch-uniform', fanIn));
        break;
      }
      case 'dense':
        params.push(spec(`${layer.name}.weight`, [layer.inputs, layer.units], 'pytorch-uniform', layer.inputs));
        params.push(spec(`${layer.name}.bias`, [layer.units], 'pytorch-uniform', layer.inputs));
        break;
      case 'batchnorm':
        params.push(spec(`${layer.name}.weight`, [layer.channels], 'ones'));
        params.push(spec(`${layer.name}.bias`, [layer.channels], 'zeros'));
        buffers.push(spec(`${layer.name}.running_mean`, [layer.channels], 'zeros'));
        buffers.push(spec(`${layer.name}.running_var`, [layer.channels], 'ones'));
        break;
      case 'tanh': case 'maxpool2': case 'dropout2d': case 'flatten':
        break;
    }
  }
  return { name, layers, params, buffers, parameterCount: params.reduce((n, p) => n + p.size, 0) };
}

function initTensor(t: TensorSpec, rng: Rng): Float32Array {
  const out = new Float32Array(t.size);
  switch (t.init) {
    case 'ones': out.fill(1); break;
    case 'zeros': break;
    case 'pytorch-uniform': {
      const bound = 1 / Math.sqrt(t.fanIn);
      for (let i = 0; i < out.length; i++) out[i] = rng.uniform(-bound, bound);
      break;
    }
  }
  return out;
}

/** Initial weights as PyTorch initialises Conv2d, Linear and BatchNorm2d, from the run seed. */
export function initialState(model: ModelSpec, seed: number): ModelState {
  const rng = new Rng(mixSeed(seed, 0x1417));
  return {
    params: model.params.map((p) => initTensor(p, rng)),
    buffers: model.buffers.map((b) => initTensor(b, rng)),
  };
}

export function cloneState(state: ModelState): ModelState {
  return { params: state.params.map((p) => p.slice()), buffers: state.buffers.map((b) => b.slice()) };
}

/** Indices into `buffers` of each batch-norm layer's running mean and variance, in layer order. */
export function batchNormLayers(model: ModelSpec): { name: string; channels: number; meanIndex: number; varIndex: number }[] {
  const out: { name: string; channels: number; meanIndex: number; varIndex: number }[] = [];
  for (const layer of model.layers) {
    if (layer.kind === 'batchnorm') out.push({ name: layer.name, channels: layer.channels, meanIndex: out.length * 2, varIndex: out.length * 2 + 1 });
  }
  return out;
}
