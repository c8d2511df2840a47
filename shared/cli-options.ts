// What the command-line entry points share: parsers for numeric flags (a bad value fails at
// parse time with a message naming the flag) and the mapping of failures to messages and
// exit codes.
import { CommanderError, InvalidArgumentError } from 'commander';
import { ErrorCode, errorMessage, isFlockError } from './errors.js';

export function intArg(min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer between ${min} and ${max}`);
    return n;
  };
}

export function floatArg(min: number, max = Number.POSITIVE_INFINITY): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number between ${min} and ${max}`);
    return n;
  };
}

/**
 * The exit code for a failure, after printing it: 2 for bad options, 1 otherwise. Flock's
 * own errors already say what to do; anything else is unexpected and gets its stack.
 * Commander's errors (with `exitOverride`) have been printed by commander: bad flags, bad
 * values and missing arguments exit 2, help exits 0.
 */
export function reportFailure(program: string, err: unknown, print: (line: string) => void): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (isFlockError(err)) {
    print(`${program}: ${err.message} [${err.code}]`);
    return err.code === ErrorCode.BAD_OPTION ? 2 : 1;
  }
  print(`${program}: unexpected error: ${errorMessage(err)}`);
  if (err instanceof Error && err.stack) print(err.stack);
  return 1;
}
