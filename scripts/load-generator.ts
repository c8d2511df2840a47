// N simulated workers in one process, for measuring the coordinator's own cost: they speak
// the real protocol but answer every micro-batch at once with a precomputed gradient.
// They present the dataset's hashes, so no images travel. Started by the benchmark:
//   node dist/scripts/load-generator.js --url ws://127.0.0.1:PORT --count 16 --model net --data-dir D
import { Command } from 'commander';
import WebSocket from 'ws';
import { datasetHash, loadCifar } from '../shared/data/cifar.js';
import { errorMessage } from '../shared/errors.js';
import { isModelName } from '../shared/models/layers.js';
import { modelSpec } from '../shared/models/spec.js';
import { MessageType, decode, encode, type CoordinatorMessage, type WorkerMessage } from '../shared/protocol.js';
import { float32ToBytes } from '../shared/tensor-codec.js';

interface Flags { url: string; count: string; model: string; dataDir: string; token?: string }

async function main(): Promise<void> {
  const flags = new Command('load-generator')
    .requiredOption('--url <url>', 'coordinator address')
    .requiredOption('--count <n>', 'simulated workers')
    .requiredOption('--data-dir <dir>', "the coordinator's data folder (for its hashes)")
    .option('--model <name>', 'model whose gradient shapes to send', 'net')
    .option('--token <token>', 'token (default $FLOCK_TOKEN)')
    .parse(process.argv)
    .opts<Flags>();
  if (!isModelName(flags.model)) throw new Error(`unknown model ${flags.model}`);
  const model = modelSpec(flags.model);
  const grads = model.params.map((p) => float32ToBytes(new Float32Array(p.size).fill(1e-4)));
  const data = await loadCifar(flags.dataDir);
  const dataHashes = { train: datasetHash(data.train), validation: datasetHash(data.validation) };
  const token = flags.token ?? process.env.FLOCK_TOKEN;
  const count = Number(flags.count);
  const done: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const ws = new WebSocket(flags.url, { headers: token ? { authorization: `Bearer ${token}` } : {}, perMessageDeflate: false });
    const send = (m: WorkerMessage): void => ws.send(encode(m));
    done.push(new Promise<void>((resolve) => {
      ws.on('error', (err) => {
        console.error(`simulated worker ${i}: ${err.message}`);
        resolve();
      });
      ws.on('close', () => resolve());
    }));
    ws.on('open', () => send({ type: MessageType.HELLO, name: `sim-${i}`, backend: 'simulated', adapter: 'simulated', dataHashes }));
    ws.on('message', (raw: Buffer) => {
      const msg: CoordinatorMessage = decode(raw, 'coordinator');
      switch (msg.type) {
        case MessageType.ASSIGN:
          for (const mb of msg.microBatches) {
            const n = mb.indices.byteLength / 4;
            send({ type: MessageType.GRADIENT, step: msg.step, microBatch: mb.id, grads, lossSum: 0.69 * n, correct: n >> 1, count: n, batchStats: [], computeMs: 0 });
          }
          break;
        case MessageType.EVALUATE:
          for (const c of msg.chunks) {
            const n = c.indices.byteLength / 4;
            send({ type: MessageType.EVALUATION, requestId: msg.requestId, chunk: c.id, lossSum: 0.69 * n, correct: n >> 1, count: n, computeMs: 0 });
          }
          break;
        case MessageType.STOP:
          ws.close(1000);
          break;
        case MessageType.WELCOME:
        case MessageType.WEIGHTS:
          break;
      }
    });
  }
  await Promise.all(done);
}

main().catch((err: unknown) => {
  console.error(`load-generator: ${errorMessage(err)}`);
  process.exitCode = 1;
});
