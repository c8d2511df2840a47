import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CheckpointStore, decodeCheckpoint, encodeCheckpoint, readCheckpointFile } from '../coordinator/checkpoint.js';
import { exportLayersModel } from '../coordinator/export-tfjs.js';
import { LocalExecutor } from '../coordinator/local-executor.js';
import { resolveTrainConfig, type TrainConfig } from '../shared/training/config.js';
import { Trainer } from '../coordinator/trainer.js';
import type { ComputeBackend } from '../shared/backend.js';
import { systemClock } from '../shared/clock.js';
import { loadCifar, type Dataset } from '../shared/data/cifar.js';
import { writeSyntheticCifar } from '../shared/data/synthetic.js';
import { isFlockError } from '../shared/errors.js';
import { normalizeImages } from '../shared/models/inputs.js';
import { ModelRuntime } from '../shared/models/runtime.js';
import { modelSpec } from '../shared/models/spec.js';
import { silentLogger, trainingBackend, withTempDir } from './helpers.js';

describe('in-process training', () => {
  let backend: ComputeBackend;
  let data: { train: Dataset; validation: Dataset };
  let dataDir: string;

  before(async () => {
    backend = await trainingBackend();
    dataDir = await mkdtemp(join(tmpdir(), 'flock-trainer-'));
    await writeSyntheticCifar(dataDir, { trainPerFile: 120, testCount: 300, seed: 11 });
    data = await loadCifar(dataDir);
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  function trainer(config: TrainConfig, opts: { store?: CheckpointStore; checkpointEvery?: number; signal?: AbortSignal } = {}, resume?: Parameters<typeof decodeCheckpoint>[0]): { trainer: Trainer; runtime: ModelRuntime } {
    const runtime = new ModelRuntime(backend, modelSpec(config.model));
    const executor = new LocalExecutor(runtime, data.train, data.validation, config.seed, systemClock);
    const store = opts.store;
    const t = new Trainer(config, { executor, logger: silentLogger(), clock: systemClock, store, signal: opts.signal },
      { trainCount: data.train.count, validationCount: data.validation.count, checkpointEvery: opts.checkpointEvery ?? 0 },
      resume ? decodeCheckpoint(resume) : undefined);
    return { trainer: t, runtime };
  }

  it('learns synthetic data: validation accuracy above 90 % after two epochs', async () => {
    const config = resolveTrainConfig({ epochs: 2, batchSize: 32, lr: 0.05, seed: 1 }, 1);
    const { trainer: t, runtime } = trainer(config);
    const result = await t.run();
    runtime.dispose();
    assert.equal(result.completed, true);
    assert.equal(result.history.length, 2);
    const last = result.history[1]!;
    assert.ok(last.valAccuracy > 0.9, `validation accuracy ${last.valAccuracy}`);
    assert.equal(result.globalStep, 2 * Math.floor(data.train.count / 32));
  });

  it('checkpoints round-trip bit-exactly and reject corruption', async () => {
    await withTempDir(async (dir) => {
      const config = resolveTrainConfig({ epochs: 1, batchSize: 32, model: 'net-batchnorm', momentum: 0.9, seed: 2 }, 1);
      const { trainer: t, runtime } = trainer(config, { store: new CheckpointStore(dir) });
      await t.run();
      runtime.dispose();
      const [file] = await readdir(dir);
      const bytes = await readFile(join(dir, file!));
      const c = decodeCheckpoint(bytes);
      assert.deepEqual(encodeCheckpoint(c), bytes);
      assert.deepEqual(c.state, t.currentState());
      assert.equal(c.epoch, 1);
      assert.equal(c.history.length, 1);
      const damaged = Buffer.from(bytes);
      damaged[damaged.length - 5]! ^= 0xff;
      await writeFile(join(dir, 'bad.flock'), damaged);
      await assert.rejects(readCheckpointFile(join(dir, 'bad.flock')), (e) => isFlockError(e, 'ERR_CHECKPOINT_CORRUPT') && e.message.includes('bad.flock'));
      await writeFile(join(dir, 'short.flock'), bytes.subarray(0, 100));
      await assert.rejects(readCheckpointFile(join(dir, 'short.flock')), (e) => isFlockError(e, 'ERR_CHECKPOINT_CORRUPT'));
      // The quarantine list (issue 12) round-trips; a malformed one is corruption.
      assert.deepEqual(c.quarantined, []);
      const evidence = { workerName: 'gpu-3', workerId: 4, backend: 'webgpu', kind: 'gradients', step: 17, unit: 2, claimed: 0.5, settled: 0.05, arbiter: 'coordinator', why: 'test' } as const;
      assert.deepEqual(decodeCheckpoint(encodeCheckpoint({ ...c, quarantined: [evidence] })).quarantined, [evidence]);
      const malformed = encodeCheckpoint({ ...c, quarantined: [{ ...evidence, workerName: 7 } as unknown as typeof evidence] });
      assert.throws(() => decodeCheckpoint(malformed), (e) => isFlockError(e, 'ERR_CHECKPOINT_CORRUPT') && e.message.includes('quarantine'));
    });
  });

  it('resuming from a mid-run checkpoint ends with the same weights as an uninterrupted run', async () => {
    await withTempDir(async (dir) => {
      const config = resolveTrainConfig({ epochs: 2, batchSize: 32, microBatch: 16, model: 'net-dropout', momentum: 0.5, weightDecay: 0.002, seed: 3 }, 1);
      const straight = trainer(config);
      const reference = await straight.trainer.run();
      straight.runtime.dispose();

      const ctl = new AbortController();
      // Stops the run right after the checkpoint of step 15 (mid-epoch 1) is written.
      class StoppingStore extends CheckpointStore {
        override async save(c: Parameters<CheckpointStore['save']>[0]): Promise<string> {
          const file = await super.save(c);
          if (c.globalStep === 15) ctl.abort();
          return file;
        }
      }
      const store = new StoppingStore(dir);
      const first = trainer(config, { store, checkpointEvery: 5, signal: ctl.signal });
      const partial = await first.trainer.run();
      first.runtime.dispose();
      assert.equal(partial.completed, false);
      const newest = await store.newest(() => assert.fail('no corrupt checkpoints expected'));
      assert.equal(newest?.checkpoint.globalStep, 15);

      const second = trainer(config, {}, await readFile(newest.file));
      const resumed = await second.trainer.run();
      second.runtime.dispose();
      assert.equal(resumed.completed, true);
      assert.deepEqual(resumed.state, reference.state);
      assert.deepEqual(resumed.history.map((h) => [h.trainLoss, h.valAccuracy]), reference.history.map((h) => [h.trainLoss, h.valAccuracy]));
    });
  });

  it('exports a TensorFlow.js model that tf.loadLayersModel loads and that predicts like the runtime', async () => {
    await withTempDir(async (dir) => {
      const config = resolveTrainConfig({ epochs: 1, batchSize: 32, model: 'net-batchnorm', seed: 4 }, 1);
      const { trainer: t, runtime } = trainer(config);
      const result = await t.run();
      const file = await exportLayersModel(backend.tf, modelSpec('net-batchnorm'), result.state, dir);
      const json = JSON.parse(await readFile(file, 'utf8')) as { weightsManifest: { paths: string[]; weights: unknown[] }[]; modelTopology: unknown };
      const weights = await readFile(join(dir, 'weights.bin'));
      const tf = backend.tf;
      const loaded = await tf.loadLayersModel(tf.io.fromMemory({
        modelTopology: json.modelTopology as object,
        weightSpecs: json.weightsManifest[0]!.weights as never,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      }));
      const n = 20;
      const images = data.validation.images.subarray(0, n * 3072);
      runtime.setState(result.state);
      const expected = await runtime.predict(images, n);
      const x = tf.tensor4d(normalizeImages(images, n), [n, 32, 32, 3]);
      const y = loaded.predict(x) as ReturnType<typeof tf.tensor>;
      const got = y.dataSync();
      for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(got[i]! - expected[i]!) < 1e-4, `probability ${i}: ${got[i]} vs ${expected[i]}`);
      tf.dispose([x, y]);
      loaded.dispose();
      runtime.dispose();
    });
  });
});
