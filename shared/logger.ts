// Builds the process logger. Only CLI entry points call this; everything else receives a
// Logger (and makes child loggers with workerId/epoch/step).
import pino, { type Logger } from 'pino';

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  readonly name: string;
}

/** JSON lines on stdout by default; `pretty` renders them for people (pino-pretty). */
export function createLogger(opts: LoggerOptions): Logger {
  const base = { level: opts.level, name: opts.name };
  if (opts.format === 'pretty') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, singleLine: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(base, pino.destination({ sync: true }));
}
