// N simulated workers in one process, for measuring the coordinator's own cost: they speak
// the real protocol but answer every micro-batch at once with a precomputed gradient.
// They present the dataset's hashes, so no images travel. With --relay each one says hello as
// a relay and answers grouped work at once with one group sum per reduce group: the upstream
// sees exactly what relays send, without their cost on this machine. Started by the benchmark:
//   node dist/scripts/load-generator.js --url ws://127.0.0.1:PORT --count 16 --model net --data-dir D [--relay]
import { Command } from 'commander';
import WebSocket from 'ws';
import { datasetHash, loadCifar } from '../shared/data/cifar.js';
import { errorMessage } from '../shared/errors.js';
import { isModelName } from '../shared/models/layers.js';
import { modelSpec } from '../shared/models/spec.js';
import { MessageType, decode, encode, type CoordinatorMessage, type WorkerMessage } from '../shared/protocol.js';
import { reduceGroupOf } from '../shared/training/reduce.js';
import { float32ToBytes } from '../shared/tensor-codec.js';

interface Flags { url: string; count: string; model: string; dataDir: string; token?: string; relay?: boolean }

async function main(): Promise<void> {
  const flags = new Command('load-generator')
    .requiredOption('--url <url>', 'coordinator address')
    .requiredOption('--count <n>', 'simulated workers')
    .requiredOption('--data-dir <dir>', "the coordinator's data folder (for its hashes)")
    .option('--model <name>', 'model whose gradient shapes to send', 'net')
    .option('--token <token>', 'token (default $FLOCK_TOKEN)')
    .option('--relay', 'simulate relays: hello.relay, one group sum per reduce group of grouped work')
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
    // An all-zero mask key, as real workers use (worker/session.ts): the coordinator skips unmasking.
    const ws = new WebSocket(flags.url, { headers: token ? { authorization: `Bearer ${token}` } : {}, perMessageDeflate: false, generateMask: (mask) => mask.fill(0) });
    const send = (m: WorkerMessage): void => ws.send(encode(m));
    done.push(new Promise<void>((resolve) => {
      ws.on('error', (err) => {
        console.error(`simulated worker ${i}: ${err.message}`);
        resolve();
      });
      ws.on('close', () => resolve());
    }));
    let reduceGroup = 0;
    ws.on('open', () => send({ type: MessageType.HELLO, name: `sim-${i}`, backend: 'simulated', adapter: 'simulated', dataHashes, ...(flags.relay ? { relay: true } : {}) }));
    ws.on('message', (raw: Buffer) => {
      const msg: CoordinatorMessage = decode(raw, 'coordinator');
      switch (msg.type) {
        case MessageType.ASSIGN:
          if (msg.grouped) {
            const groups = new Map<number, { microBatch: number; lossSum: number; correct: number; count: number; batchStats: [] }[]>();
            for (const mb of [...msg.microBatches].sort((a, b) => a.id - b.id)) {
              const n = mb.indices.byteLength / 4;
              const g = reduceGroupOf(mb.id, reduceGroup);
              groups.set(g, [...(groups.get(g) ?? []), { microBatch: mb.id, lossSum: 0.69 * n, correct: n >> 1, count: n, batchStats: [] }]);
            }
            for (const [group, parts] of groups) send({ type: MessageType.GROUP_SUM, step: msg.step, group, grads, parts, computeMs: 0 });
            break;
          }
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
          reduceGroup = msg.config.reduceGroup ?? 0;
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
