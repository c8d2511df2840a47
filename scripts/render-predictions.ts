// Writes a PNG grid of validation images, each framed green where the checkpoint's
// prediction is right and red where it is wrong (the recipe looked at its images too).
//   node dist/scripts/render-predictions.js --checkpoint checkpoints/checkpoint-000015600.flock [--count 64] [--out predictions.png]
import { Command, Option } from 'commander';
import { evaluateCheckpoint, predictImages } from '../coordinator/evaluate.js';
import { readCheckpointFile } from '../coordinator/checkpoint.js';
import { BACKEND_NAMES, type BackendRequest } from '../shared/backend.js';
import { loadBackend } from '../shared/backends/load.js';
import { loadCifar, resolveDataDir } from '../shared/data/cifar.js';
import { writeImageGridPng } from '../shared/data/image-file.js';
import { errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { CLASS_NAMES, IMAGE_BYTES } from '../shared/models/layers.js';

interface Flags { checkpoint: string; dataDir?: string; count: string; offset: string; out: string; backend: BackendRequest; columns: string }

async function main(): Promise<void> {
  const flags = new Command('render-predictions')
    .description('PNG grid of validation images with the predictions of a checkpoint (green border: right, red: wrong)')
    .requiredOption('--checkpoint <file>', 'checkpoint to predict with')
    .option('--data-dir <dir>', 'CIFAR-10 binary folder (default $FLOCK_DATA_DIR, else ./data/cifar-10-batches-bin)')
    .option('--count <n>', 'number of images', '64')
    .option('--offset <i>', 'first validation image', '0')
    .option('--columns <n>', 'images per row', '8')
    .option('--out <file>', 'PNG to write', 'predictions.png')
    .addOption(new Option('--backend <name>', 'compute backend').choices(['auto', ...BACKEND_NAMES]).default('auto'))
    .parse(process.argv)
    .opts<Flags>();
  const log = createLogger({ level: 'warn', format: 'json', name: 'render-predictions' });
  const checkpoint = await readCheckpointFile(flags.checkpoint);
  const backend = await loadBackend(flags.backend, log);
  const { validation } = await loadCifar(resolveDataDir(flags.dataDir, process.env.FLOCK_DATA_DIR));
  const offset = Math.min(Number(flags.offset), validation.count - 1);
  const count = Math.min(Number(flags.count), validation.count - offset);
  const images = validation.images.slice(offset * IMAGE_BYTES, (offset + count) * IMAGE_BYTES);
  const predictions = await predictImages(backend, checkpoint, images, count);
  const correct = predictions.map((p, i) => p.classIndex === validation.labels[offset + i]);
  const size = writeImageGridPng(flags.out, images, count, { correct, columns: Number(flags.columns) });
  const right = correct.filter(Boolean).length;
  console.log(`wrote ${flags.out} (${size.width}x${size.height}): ${count} validation images from #${offset}, ${right} right (green), ${count - right} wrong (red)`);
  for (let r = 0; r * Number(flags.columns) < count; r++) {
    const row = predictions.slice(r * Number(flags.columns), (r + 1) * Number(flags.columns));
    console.log(`row ${r + 1}: ${row.map((p) => p.className.padEnd(8)).join(' ')}`);
  }
  const all = await evaluateCheckpoint(backend, checkpoint, { validation });
  console.log(`validation accuracy of the checkpoint: ${all.validation.accuracy.toFixed(4)} (${CLASS_NAMES.join(' vs ')})`);
}

main().catch((err: unknown) => {
  console.error(`render-predictions: ${errorMessage(err)}`);
  process.exitCode = 1;
});
