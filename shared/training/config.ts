// The training configuration: defaults are the recipe's, validated once.
import { definedOnly } from '../defaults.js';
import { ErrorCode, FlockError } from '../errors.js';
import { isModelName, type ModelName } from '../models/layers.js';

export interface TrainConfig {
  readonly model: ModelName;
  readonly epochs: number;
  /** Global batch per step, independent of the number of workers. */
  readonly batchSize: number;
  /** Samples per micro-batch, the unit of work handed to a worker. */
  readonly microBatch: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly seed: number;
  /**
   * Micro-batches per reduce group: the step's sum is the sum, in group order, of contiguous
   * groups of this many micro-batches each summed in id order (0 = the whole step is one
   * group). Relays take whole groups; the bits depend on this, never on the topology.
   */
  readonly reduceGroup?: number;
  /**
   * Tensors on the wire: float32 (exact, the default) or float16 (lossy: weights and gradients
   * rounded to IEEE binary16 on the way, half the bytes; results are no longer bit-identical).
   */
  readonly wirePrecision: WirePrecision;
}

export const WIRE_PRECISIONS = ['float32', 'float16'] as const;
export type WirePrecision = (typeof WIRE_PRECISIONS)[number];

export const TRAIN_DEFAULTS: Omit<TrainConfig, 'microBatch'> = {
  model: 'net',
  epochs: 100,
  batchSize: 64,
  lr: 0.01,
  momentum: 0,
  weightDecay: 0,
  seed: 0,
  reduceGroup: 0,
  wirePrecision: 'float32',
};

function bad(message: string): never {
  throw new FlockError(ErrorCode.BAD_OPTION, message);
}

const isInt = (v: number, min: number): boolean => Number.isInteger(v) && v >= min;

/**
 * Merges options over the defaults and validates them. Without `microBatch`, the global
 * batch is split evenly over the workers present at start (rounded up).
 */
export function resolveTrainConfig(opts: Partial<TrainConfig>, workersAtStart: number): TrainConfig {
  const merged = { ...TRAIN_DEFAULTS, ...definedOnly(opts) };
  if (!isModelName(merged.model)) bad(`unknown model '${String(merged.model)}'; choose net, net-width, net-dropout or net-batchnorm`);
  if (!isInt(merged.epochs, 1)) bad(`--epochs must be a positive integer (got ${merged.epochs})`);
  if (!isInt(merged.batchSize, 1)) bad(`--batch-size must be a positive integer (got ${merged.batchSize})`);
  const microBatch = merged.microBatch ?? Math.ceil(merged.batchSize / Math.max(1, workersAtStart));
  if (!isInt(microBatch, 1) || microBatch > merged.batchSize) bad(`--micro-batch must be an integer between 1 and the batch size ${merged.batchSize} (got ${microBatch})`);
  if (!(merged.lr > 0) || !Number.isFinite(merged.lr)) bad(`--lr must be a positive number (got ${merged.lr})`);
  if (!(merged.momentum >= 0 && merged.momentum < 1)) bad(`--momentum must be in [0, 1) (got ${merged.momentum})`);
  if (!(merged.weightDecay >= 0) || !Number.isFinite(merged.weightDecay)) bad(`--weight-decay must be >= 0 (got ${merged.weightDecay})`);
  if (!isInt(merged.seed, 0) || merged.seed > 0xffffffff) bad(`--seed must be an integer in [0, 2^32) (got ${merged.seed})`);
  if (!isInt(merged.reduceGroup ?? 0, 0)) bad(`--reduce-group must be a non-negative integer (got ${merged.reduceGroup})`);
  if (!(WIRE_PRECISIONS as readonly unknown[]).includes(merged.wirePrecision)) bad(`--wire-precision must be float32 or float16 (got ${String(merged.wirePrecision)})`);
  return { ...merged, microBatch };
}
