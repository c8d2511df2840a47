// N simulated workers in one process, for measuring the coordinator's own cost: they speak
// the real protocol but answer every micro-batch at once with a precomputed gradient.
// They present the dataset's hashes, so no images travel. With --relay each one says hello as
// a relay and answers grouped work at once with one group sum per reduce group: the upstream
// sees exactly what relays send, without their cost on this machine. Gradient frames are
// encoded once per sample count and copied with the step and micro-batch written in, so the
// generator's own cost (it shares the machine with the coordinator) stays small; they are
// valid msgpack of the same message (the ids as 32-bit integers). Started by the benchmark:
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

/** Placeholder ids that msgpack writes as uint32 (0xce, then 4 bytes big-endian): found once in a template, patched per answer. */
const STEP_MARK = 0xfffffff0;
const MICRO_BATCH_MARK = 0xfffffff1;

function markAt(frame: Uint8Array, mark: number): number {
  const pattern = Buffer.from([0xce, mark >>> 24, (mark >>> 16) & 255, (mark >>> 8) & 255, mark & 255]);
  const at = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).indexOf(pattern);
  if (at < 0) throw new Error(`gradient template lacks the placeholder ${mark}`);
  return at + 1;
}

/**
 * Gradient frames, one template per sample count. A frame is a copy of its template with the
 * ids written in; copies go back to a free list once ws has written them, so answers allocate
 * nothing in steady state.
 */
class GradientFrames {
  private readonly templates = new Map<number, { bytes: Buffer; step: number; microBatch: number }>();
  private readonly free = new Map<number, Buffer[]>();

  constructor(private readonly grads: readonly Uint8Array[]) {}

  /** The frame of the gradient of `microBatch` (`samples` images) at `step`, and its release. */
  frame(step: number, microBatch: number, samples: number): { bytes: Buffer; release: () => void } {
    const t = this.template(samples);
    const list = this.free.get(t.bytes.length) ?? [];
    this.free.set(t.bytes.length, list);
    const bytes = list.pop() ?? Buffer.allocUnsafe(t.bytes.length);
    t.bytes.copy(bytes);
    bytes.writeUInt32BE(step, t.step);
    bytes.writeUInt32BE(microBatch, t.microBatch);
    return { bytes, release: () => list.push(bytes) };
  }

  private template(samples: number): { bytes: Buffer; step: number; microBatch: number } {
    let t = this.templates.get(samples);
    if (t) return t;
    const message = (step: number, microBatch: number): WorkerMessage => ({
      type: MessageType.GRADIENT, step, microBatch, grads: [...this.grads], lossSum: 0.69 * samples, correct: samples >> 1, count: samples, batchStats: [], computeMs: 0,
    });
    const encoded = encode(message(STEP_MARK, MICRO_BATCH_MARK));
    const bytes = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    t = { bytes: Buffer.from(bytes), step: markAt(bytes, STEP_MARK), microBatch: markAt(bytes, MICRO_BATCH_MARK) };
    this.templates.set(samples, t);
    // A patched frame must decode as the message it stands for.
    const probe = this.frame(7, 3, samples);
    const back = decode(probe.bytes, 'worker');
    if (back.type !== MessageType.GRADIENT || back.step !== 7 || back.microBatch !== 3 || back.count !== samples) throw new Error('gradient template does not decode as patched');
    probe.release();
    return t;
  }
}

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
  const frames = new GradientFrames(grads);
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
              const part = { microBatch: mb.id, lossSum: 0.69 * n, correct: n >> 1, count: n, batchStats: [] as [] };
              const list = groups.get(g);
              if (list) list.push(part);
              else groups.set(g, [part]);
            }
            for (const [group, parts] of groups) send({ type: MessageType.GROUP_SUM, step: msg.step, group, grads, parts, computeMs: 0 });
            break;
          }
          for (const mb of msg.microBatches) {
            const n = mb.indices.byteLength / 4;
            const frame = frames.frame(msg.step, mb.id, n);
            ws.send(frame.bytes, frame.release);
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
