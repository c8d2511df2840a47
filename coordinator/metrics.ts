// What one epoch of training reports (logged as the `epoch` event and kept in checkpoints).
export interface EpochMetrics {
  readonly epoch: number;
  readonly steps: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  /** Training images per second (validation excluded). */
  readonly imagesPerSec: number;
  readonly workers: number;
  /** Wall time of the epoch, validation included. */
  readonly seconds: number;
  /** Where the training steps' time went, in seconds. */
  readonly computeSeconds: number;
  readonly communicationSeconds: number;
  readonly waitingSeconds: number;
}
