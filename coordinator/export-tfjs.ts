// Exports trained weights as a TensorFlow.js Layers model (model.json + weights.bin) that
// `tf.loadLayersModel` loads, so the classifier serves in a browser or a Node app.
// The model takes normalised NHWC float32 input (see CHANNEL_MEAN/STD, also in the
// model's metadata) and outputs class probabilities.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../shared/backend.js';
import { BATCH_NORM_EPSILON } from '../shared/models/forward.js';
import { CHANNEL_MEAN, CHANNEL_STD } from '../shared/models/inputs.js';
import { CLASS_NAMES, IMAGE_CHANNELS, IMAGE_SIZE } from '../shared/models/layers.js';
import type { ModelSpec, ModelState } from '../shared/models/spec.js';
import { writeFileAtomic } from './checkpoint.js';

/** The Layers-API equivalent of `model`, with `state` loaded into it. */
export function toLayersModel(tf: Tf, model: ModelSpec, state: ModelState): tfjs.Sequential {
  const seq = tf.sequential({ name: model.name.replace(/-/g, '_') });
  const inputShape = [IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS];
  const first = (): { inputShape?: number[] } => (seq.layers.length === 0 ? { inputShape } : {});
  // Weights are set layer by layer: the model-level list puts all trainable weights before
  // the batch-norm moving statistics, which is not the layer order.
  const pending: { layer: tfjs.layers.Layer; weights: tfjs.Tensor[] }[] = [];
  let weights: tfjs.Tensor[] = [];
  let p = 0;
  let b = 0;
  const next = (shape: readonly number[], source: Float32Array[], index: number): void => {
    weights.push(tf.tensor(source[index]!, [...shape]));
  };
  const added = (): void => {
    if (weights.length > 0) pending.push({ layer: seq.layers[seq.layers.length - 1]!, weights });
    weights = [];
  };
  for (const layer of model.layers) {
    switch (layer.kind) {
      case 'conv2d':
        seq.add(tf.layers.conv2d({ ...first(), name: layer.name, filters: layer.outChannels, kernelSize: layer.kernel, padding: 'same' }));
        next(model.params[p]!.shape, state.params, p); p++;
        next(model.params[p]!.shape, state.params, p); p++;
        added();
        break;
      case 'batchnorm':
        // Keras momentum is the weight of the old value: PyTorch's 0.1 is Keras's 0.9.
        seq.add(tf.layers.batchNormalization({ ...first(), name: layer.name, axis: -1, epsilon: BATCH_NORM_EPSILON, momentum: 0.9 }));
        next(model.params[p]!.shape, state.params, p); p++;
        next(model.params[p]!.shape, state.params, p); p++;
        next(model.buffers[b]!.shape, state.buffers, b); b++;
        next(model.buffers[b]!.shape, state.buffers, b); b++;
        added();
        break;
      case 'tanh':
        seq.add(tf.layers.activation({ ...first(), activation: 'tanh' }));
        break;
      case 'maxpool2':
        seq.add(tf.layers.maxPooling2d({ ...first(), poolSize: 2, strides: 2, padding: 'valid' }));
        break;
      case 'dropout2d':
        // Identity at inference; kept so the layer list reads like the training model.
        seq.add(tf.layers.dropout({ ...first(), rate: layer.rate }));
        break;
      case 'flatten':
        seq.add(tf.layers.flatten({ ...first() }));
        break;
      case 'dense':
        seq.add(tf.layers.dense({ ...first(), name: layer.name, units: layer.units }));
        next(model.params[p]!.shape, state.params, p); p++;
        next(model.params[p]!.shape, state.params, p); p++;
        added();
        break;
    }
  }
  seq.add(tf.layers.activation({ activation: 'softmax', name: 'probabilities' }));
  for (const { layer, weights: w } of pending) {
    layer.setWeights(w);
    tf.dispose(w);
  }
  return seq;
}

export const EXPORT_METADATA = {
  input: 'NHWC float32 [N, 32, 32, 3]: (pixel / 255 - mean) / std per RGB channel',
  mean: CHANNEL_MEAN,
  std: CHANNEL_STD,
  classes: CLASS_NAMES,
};

/** Writes `dir/model.json` and `dir/weights.bin`; returns the model.json path. */
export async function exportLayersModel(tf: Tf, model: ModelSpec, state: ModelState, dir: string): Promise<string> {
  const seq = toLayersModel(tf, model, state);
  await mkdir(dir, { recursive: true });
  try {
    await seq.save(tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData;
      if (!weightData || !(weightData instanceof ArrayBuffer)) throw new Error('export: expected one weight buffer');
      await writeFileAtomic(join(dir, 'weights.bin'), new Uint8Array(weightData), dir);
      const json = {
        format: 'layers-model',
        generatedBy: `Flock (TensorFlow.js ${tf.version.tfjs})`,
        convertedBy: null,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        userDefinedMetadata: { flock: { model: model.name, ...EXPORT_METADATA } },
      };
      await writeFileAtomic(join(dir, 'model.json'), Buffer.from(JSON.stringify(json)), dir);
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }));
  } finally {
    seq.dispose();
  }
  return join(dir, 'model.json');
}
