// What a coordinator can make a worker do: a spoofed welcome announcing a huge data set is
// refused before anything big is allocated, with ERR_DATA_TOO_LARGE and close code 4006.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { CloseCode, MessageType, encode } from '../shared/protocol.js';
import { resolveTrainConfig } from '../shared/training/config.js';
import { Worker } from '../worker/worker.js';
import { silentLogger, trainingBackend } from './helpers.js';

describe('worker limits', () => {
  it('a welcome with huge counts is refused with ERR_DATA_TOO_LARGE, allocating nothing big', async () => {
    const backend = await trainingBackend();
    const fake = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(fake, 'listening');
    const port = (fake.address() as { port: number }).port;
    const closed = new Promise<number>((resolve) => {
      fake.on('connection', (ws) => {
        ws.on('close', (code: number) => resolve(code));
        ws.once('message', () => ws.send(encode({
          type: MessageType.WELCOME, workerId: 1, config: resolveTrainConfig({ epochs: 1, batchSize: 32 }, 1), heartbeatMs: 5000,
          hashes: { train: 'a'.repeat(64), validation: 'b'.repeat(64) },
          // 3 GB of images at the default limit of 512 MiB; 3 MB at a limit of 1 MiB.
          counts: { train: 1_000_000, validation: 0 }, localData: { train: false, validation: false },
        })));
      });
    });
    try {
      for (const maxDataBytes of [undefined, 2 ** 20]) {
        const before = process.memoryUsage().arrayBuffers;
        const worker = new Worker({ url: `ws://127.0.0.1:${port}`, name: 'careful', maxDataBytes: maxDataBytes === undefined ? undefined : maxDataBytes }, { logger: silentLogger(), backend });
        await assert.rejects(worker.run(), (err: unknown) => isFlockError(err, ErrorCode.DATA_TOO_LARGE) && /--max-data-mb/.test(err.message) && /1000000 training/.test(err.message));
        assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 2 ** 20, 'no large buffer was allocated');
      }
      assert.equal(await closed, CloseCode.DATA, 'the worker tells the coordinator why (4006)');
    } finally {
      fake.clients.forEach((ws) => ws.terminate());
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
  });
});
