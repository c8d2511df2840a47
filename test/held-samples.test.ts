// The bitsets a reconnecting worker sends in hello to say which images it kept.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isFlockError } from '../shared/errors.js';
import { MessageType, bitsToFlags, decode, encode, flagsToBits } from '../shared/protocol.js';

describe('held samples', () => {
  it('bitsets round-trip and must fit the split', () => {
    const flags = Uint8Array.from({ length: 21 }, (_, i) => (i % 3 === 0 || i === 20 ? 1 : 0));
    const bits = flagsToBits(flags);
    assert.equal(bits.byteLength, 3);
    assert.deepEqual(bitsToFlags(bits, 21), flags);
    assert.throws(() => bitsToFlags(bits, 25), (err: unknown) => isFlockError(err, ErrorCode.PROTOCOL));
    assert.throws(() => bitsToFlags(bits, 16), (err: unknown) => isFlockError(err, ErrorCode.PROTOCOL));
  });

  it('hello carries them through encode/decode; a malformed one is a protocol violation', () => {
    const held = { hashes: { train: 'a'.repeat(64), validation: 'b'.repeat(64) }, train: new Uint8Array([5, 1]), validation: new Uint8Array([1]) };
    const msg = decode(encode({ type: MessageType.HELLO, name: 'w', backend: 'cpu', adapter: 'CPU: test', held }), 'worker');
    assert.equal(msg.type, MessageType.HELLO);
    assert.deepEqual(msg.type === MessageType.HELLO && msg.held && [...msg.held.train], [5, 1]);
    const bad = encode({ type: MessageType.HELLO, name: 'w', backend: 'cpu', adapter: 'CPU: test', held: { ...held, train: 'not bytes' as unknown as Uint8Array } });
    assert.throws(() => decode(bad, 'worker'), (err: unknown) => isFlockError(err, ErrorCode.PROTOCOL) && /held\.train/.test(err.message));
  });
});
