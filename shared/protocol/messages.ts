// Every message of the coordinator <-> worker protocol: its number and its fields as the
// receiver sees them after decoding. Tensors are raw little-endian Float32 bytes, images raw
// uint8, index lists raw little-endian Uint32, so nothing large ever becomes a JS number array.
import type { TrainConfig } from '../training/config.js';

/**
 * 2: weights travel inside assign/evaluate (the separate weights message, number 3, is gone).
 * 3: relays: hello.relay, assign.grouped and the group-sum message.
 * 4: hello carries the worker's compute adapter.
 * 5: a result's lossSum (gradient, group-sum part, evaluation) may be NaN or ±Infinity: divergence is
 *    reported as data, not a protocol violation (quarantine close code 4009 comes with it).
 */
export const PROTOCOL_VERSION = 5;

export const MessageType = {
  /** worker -> coordinator: first frame of every connection. */
  HELLO: 1,
  /** coordinator -> worker: accepted; run config, dataset identity, current weights. */
  WELCOME: 2,
  // 3 was WEIGHTS (protocol 1): weights now travel inside ASSIGN and EVALUATE.
  /** coordinator -> worker: micro-batches to compute gradients of, with samples not yet sent. */
  ASSIGN: 4,
  /** worker -> coordinator: gradient sum and statistics of one micro-batch. */
  GRADIENT: 5,
  /** coordinator -> worker: chunks to evaluate, with samples not yet sent. */
  EVALUATE: 6,
  /** worker -> coordinator: loss and accuracy of one chunk. */
  EVALUATION: 7,
  /** coordinator -> worker: training is over (or the coordinator shuts down); exit. */
  STOP: 8,
  /** worker -> coordinator: this worker cannot compute (e.g. a backend error) and is leaving. */
  FAILURE: 9,
  /** relay -> upstream: the gradient sum of one whole reduce group, with each micro-batch's counts and statistics. */
  GROUP_SUM: 10,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Float32 tensors as raw little-endian bytes, in the model's parameter/buffer order. */
export interface WireState {
  readonly params: Uint8Array[];
  readonly buffers: Uint8Array[];
  /** `params` are IEEE binary16 bytes (runs with --wire-precision float16); buffers stay float32. */
  readonly half?: boolean;
}

/** A micro-batch or evaluation chunk: its id and sample indices (Uint32 LE bytes). */
export interface WireWork {
  readonly id: number;
  readonly indices: Uint8Array;
}

/** Samples shipped with a piece of work: indices (Uint32 LE), NHWC images, labels. */
export interface WireSamples {
  readonly indices: Uint8Array;
  readonly images: Uint8Array;
  readonly labels: Uint8Array;
}

export interface DatasetInfo {
  readonly train: string;
  readonly validation: string;
}

export type SplitName = 'train' | 'validation';

export interface HelloMessage {
  readonly type: typeof MessageType.HELLO;
  readonly name: string;
  readonly backend: string;
  /** The device its backend computes on (WebGPU adapter or CPU model), shown on the dashboard. */
  readonly adapter: string;
  /** datasetHash of the worker's local copy, if it has one. */
  readonly dataHashes?: DatasetInfo;
  /**
   * Images this worker kept from earlier connections (it keeps them across reconnects):
   * bitsets over each split's samples (bit i = byte i >> 3, bit i & 7), for the data set
   * with these hashes. The coordinator sends only the samples not set here.
   */
  readonly held?: HeldSamples;
  /** A relay (`coordinator relay`): it can take whole reduce groups and answer each with one group sum. */
  readonly relay?: boolean;
}

export interface HeldSamples {
  readonly hashes: DatasetInfo;
  readonly train: Uint8Array;
  readonly validation: Uint8Array;
}

export interface WelcomeMessage {
  readonly type: typeof MessageType.WELCOME;
  readonly workerId: number;
  readonly config: TrainConfig;
  /** The coordinator pings this often; silence for several intervals means it is gone. */
  readonly heartbeatMs: number;
  readonly hashes: DatasetInfo;
  readonly counts: { readonly train: number; readonly validation: number };
  /** Splits the worker reads from its own copy (its hash matched), so no samples are sent. */
  readonly localData: { readonly train: boolean; readonly validation: boolean };
  /** Current weights, when the coordinator has any yet. */
  readonly weights?: VersionedWire;
}

/** Weights for a version (= global step). */
export interface VersionedWire extends WireState {
  readonly version: number;
}

export interface AssignMessage {
  readonly type: typeof MessageType.ASSIGN;
  readonly epoch: number;
  readonly step: number;
  readonly weightsVersion: number;
  readonly microBatches: WireWork[];
  readonly samples: WireSamples;
  /** The weights at `weightsVersion`, when this worker does not hold them yet (one frame per step). */
  readonly weights?: VersionedWire;
  /** Only to relays: `microBatches` are whole reduce groups; answer with one group sum per group. */
  readonly grouped?: boolean;
}

export interface GradientMessage {
  readonly type: typeof MessageType.GRADIENT;
  readonly step: number;
  readonly microBatch: number;
  /** Gradient of the summed loss, one Float32 LE tensor per parameter (binary16 with `half`). */
  readonly grads: Uint8Array[];
  /** `grads` are IEEE binary16 bytes (only in runs with --wire-precision float16). */
  readonly half?: boolean;
  /** May be NaN or ±Infinity when the model diverged (protocol version 5). */
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  /** Per batch-norm layer: micro-batch mean and biased variance, Float32 LE. */
  readonly batchStats: { readonly mean: Uint8Array; readonly variance: Uint8Array }[];
  readonly computeMs: number;
}

/** One micro-batch's share of a group sum: what a gradient message says besides the gradient. */
export interface GroupPart {
  readonly microBatch: number;
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  readonly batchStats: { readonly mean: Uint8Array; readonly variance: Uint8Array }[];
}

export interface GroupSumMessage {
  readonly type: typeof MessageType.GROUP_SUM;
  readonly step: number;
  /** The reduce group: micro-batches floor(id / config.reduceGroup) == group. */
  readonly group: number;
  /** Sum over the group's micro-batches, in id order from zero, one Float32 LE tensor per parameter. */
  readonly grads: Uint8Array[];
  /** One per micro-batch of the group, in id order. */
  readonly parts: GroupPart[];
  /** The relay's wall time for the group's step work. */
  readonly computeMs: number;
}

export interface EvaluateMessage {
  readonly type: typeof MessageType.EVALUATE;
  readonly requestId: number;
  readonly weightsVersion: number;
  readonly split: SplitName;
  readonly chunks: WireWork[];
  readonly samples: WireSamples;
  /** The weights at `weightsVersion`, when this worker does not hold them yet. */
  readonly weights?: VersionedWire;
}

export interface EvaluationMessage {
  readonly type: typeof MessageType.EVALUATION;
  readonly requestId: number;
  readonly chunk: number;
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
  readonly computeMs: number;
}

export interface StopMessage {
  readonly type: typeof MessageType.STOP;
  readonly reason: string;
}

export interface FailureMessage {
  readonly type: typeof MessageType.FAILURE;
  readonly code: string;
  readonly message: string;
}

export type WorkerMessage = HelloMessage | GradientMessage | GroupSumMessage | EvaluationMessage | FailureMessage;
export type CoordinatorMessage = WelcomeMessage | AssignMessage | EvaluateMessage | StopMessage;
export type Message = WorkerMessage | CoordinatorMessage;
/** Who sent a frame: decides which messages are legal in it. */
export type Sender = 'worker' | 'coordinator';

