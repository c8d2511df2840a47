// Writes a small synthetic cifar-10-batches-bin folder, for trying Flock without the real data.
import { Command, InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { DEFAULT_DATA_DIR } from '../shared/data/cifar.js';
import { SYNTHETIC_DEFAULTS, writeSyntheticCifar } from '../shared/data/synthetic.js';

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number >= 0.');
  return n;
}

const program = new Command('make-synthetic')
  .description('Write synthetic CIFAR-10 binary files (airplane/bird-like images plus some other labels).')
  .option('--dir <dir>', 'target cifar-10-batches-bin folder', DEFAULT_DATA_DIR)
  .option('--train-per-file <n>', 'records per data_batch_N.bin', nonNegativeInt, SYNTHETIC_DEFAULTS.trainPerFile)
  .option('--test <n>', 'records in test_batch.bin', nonNegativeInt, SYNTHETIC_DEFAULTS.testCount)
  .option('--seed <n>', 'random seed', nonNegativeInt, SYNTHETIC_DEFAULTS.seed)
  .parse();

const opts = program.opts<{ dir: string; trainPerFile: number; test: number; seed: number }>();
const summary = await writeSyntheticCifar(opts.dir, { trainPerFile: opts.trainPerFile, testCount: opts.test, seed: opts.seed });
console.log(
  `wrote synthetic CIFAR-10 to ${resolve(summary.dir)}: ${summary.train} train and ${summary.validation} validation ` +
    `airplane/bird images (+${summary.dropped} of other labels the loader drops)`,
);
