// The close-code table: every application code the protocol lists is one some error sends,
// and what a received code means closes with the same code again.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, FlockError } from '../shared/errors.js';
import { CloseCode, closeCodeFor, errorOfClose, isCloseCode } from '../shared/protocol.js';

describe('close codes', () => {
  it('round-trip: the error a code stands for is sent with that code (4999 stands for any other error)', () => {
    for (const code of Object.values(CloseCode)) {
      const err = errorOfClose(code, 'why');
      assert.ok(err instanceof FlockError);
      if (code !== CloseCode.INTERNAL) assert.equal(closeCodeFor(err), code, `${code} -> ${err.code}`);
    }
  });

  it('errors without a code of their own close with 4999; standard codes stand for no error', () => {
    assert.equal(closeCodeFor(new FlockError(ErrorCode.UNAUTHORIZED, 'x')), CloseCode.INTERNAL);
    assert.equal(closeCodeFor(new Error('plain')), CloseCode.INTERNAL);
    assert.equal(closeCodeFor(new FlockError(ErrorCode.DATA_MISSING, 'x')), CloseCode.DATA);
    assert.equal(errorOfClose(1000, ''), undefined);
    assert.ok(!isCloseCode(4002) && !isCloseCode(4008), 'the unused codes are gone');
  });
});
