// The curves a report draws, taken from runs' epoch records: one panel per quantity, one
// series per run and split. The renderer draws exactly these numbers.
import type { RunSnapshot } from '../dashboard/run-state.js';

export interface Series {
  readonly label: string;
  /** RGB. */
  readonly color: readonly [number, number, number];
  readonly x: readonly number[];
  readonly y: readonly number[];
}

export interface Panel {
  readonly title: string;
  readonly series: readonly Series[];
}

const TRAIN: [number, number, number][] = [[31, 119, 180], [148, 103, 189], [23, 190, 207]];
const VALIDATION: [number, number, number][] = [[214, 39, 40], [255, 127, 14], [140, 86, 75]];
const THROUGHPUT: [number, number, number][] = [[44, 160, 44], [188, 189, 34], [127, 127, 127]];

export function curvesOf(runs: readonly RunSnapshot[]): Panel[] {
  const pick = <T>(palette: T[], i: number): T => palette[i % palette.length]!;
  const prefix = (run: RunSnapshot): string => (runs.length > 1 ? `${run.label} ` : '');
  const epochSeries = (label: string, palette: [number, number, number][], y: (run: RunSnapshot) => number[]): Series[] =>
    runs.map((run, i) => ({ label: `${prefix(run)}${label}`, color: pick(palette, i), x: run.epochs.map((e) => e.epoch), y: y(run) }));
  return [
    { title: 'loss', series: [...epochSeries('train', TRAIN, (r) => r.epochs.map((e) => e.trainLoss)), ...epochSeries('validation', VALIDATION, (r) => r.epochs.map((e) => e.valLoss))] },
    { title: 'accuracy', series: [...epochSeries('train', TRAIN, (r) => r.epochs.map((e) => e.trainAccuracy)), ...epochSeries('validation', VALIDATION, (r) => r.epochs.map((e) => e.valAccuracy))] },
    { title: 'images/s', series: epochSeries('images/s', THROUGHPUT, (r) => r.epochs.map((e) => e.imagesPerSec)) },
  ];
}
