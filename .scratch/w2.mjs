import { trainEpochs } from '../dist/scripts/bench-distributed.js';
import { loadCifar } from '../dist/shared/data/cifar.js';
const sets = await loadCifar('/work/shared/data/cifar-10-batches-bin');
const data = { train: sets.train.count ? sets.train : sets.train, validation: sets.validation };
const n = Number(process.argv[2] ?? 3);
for (let i = 0; i < n; i++) for (const workers of [0, 2]) {
  const m = await trainEpochs({ model: process.argv[3] ?? 'net', workers, data, epochs: 2 });
  const st = m.computeSeconds + m.communicationSeconds + m.waitingSeconds;
  console.log(workers, m.imagesPerSec.toFixed(0), 'comm', (100*m.communicationSeconds/st).toFixed(1)+'%', 'compute ms/step', (1000*m.computeSeconds/m.steps).toFixed(1), 'step ms', (1000*st/m.steps).toFixed(1));
}
