// Builds the process logger. Only CLI entry points call this; everything else receives a
// Logger (and makes child loggers with workerId/epoch/step).
import pino, { type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  readonly name: string;
  /** Whether standard output is a terminal: `auto` is pretty there, JSON lines elsewhere. */
  readonly isTTY?: boolean;
  /** Where the lines go; default standard output. */
  readonly destination?: DestinationStream;
  /** Also receives every JSON line (the dashboard's run monitor reads them). */
  readonly tap?: (line: string) => void;
}

/** `auto` means pretty on a terminal and JSON lines otherwise (pipes, files, CI). */
export function resolveLogFormat(format: LogFormat, isTTY: boolean): 'json' | 'pretty' {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

/** JSON lines on stdout by default; `pretty` renders them for people (pino-pretty). */
export function createLogger(opts: LoggerOptions): Logger {
  const base = { level: opts.level, name: opts.name };
  const format = resolveLogFormat(opts.format, opts.isTTY ?? false);
  const out = opts.destination ?? pino.destination({ sync: true });
  const main: DestinationStream = format === 'pretty'
    // `auto` on a terminal shows the message only (it says it all); `pretty` keeps the fields.
    // (singleLine only matters for the fields, and pino-pretty 13.2 with both set ends lines with no newline.)
    ? pretty({ colorize: opts.isTTY ?? false, singleLine: opts.format !== 'auto', translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname', hideObject: opts.format === 'auto', destination: out, sync: true })
    : out;
  if (!opts.tap || opts.level === 'silent') return pino(base, main);
  const tap = opts.tap;
  return pino(base, pino.multistream([
    { level: opts.level, stream: main },
    { level: opts.level, stream: { write: (line: string) => tap(line) } },
  ]));
}
