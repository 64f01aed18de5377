/**
 * The process's loggers. On a terminal the console gets human lines (pino-pretty, formatted in
 * this thread: a terminal is read by a person, so it sees few lines); anywhere else it gets JSON
 * lines, the cheap path at high ingest rates and what log shippers and the tests read. Log files
 * (the collector's data_collector.log) are JSON lines always.
 */
import { mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { prettyFactory } from 'pino-pretty';
import { ConfigError, type LogLevel } from './config.js';

export type Logger = pino.Logger;

export interface LoggerOptions {
  level: LogLevel;
  /** `name` on every line, e.g. "collector". */
  name?: string;
  /** Also append JSON lines to this file, opened here (a path that cannot be opened throws a ConfigError). */
  file?: { path: string; setting: string };
  /** Human-readable console lines; default: when stdout is a terminal. */
  pretty?: boolean;
}

/** Never let a key or a URI's password reach a log line, whatever a caller passes. */
const REDACT = [
  'apiKey',
  'api_key',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers.cookie',
  '*.apiKey',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
  '*.headers.cookie',
  'config.apiKey',
  'config.readApiKey',
  'config.mongodbUri',
];

/**
 * Fastify logs "Server listening at <url>" once per address of the machine; the service logs one
 * line of its own per listener instead. Pass `listenTextResolver: () => UNLOGGED` to `listen`: a
 * logger made here drops that message.
 */
export const UNLOGGED = '\u0000unlogged';

type Sink = pino.DestinationStream & { flushSync?(): void };

let consoleJson: Sink | undefined;
let consolePretty: Sink | undefined;

/** One console destination per process and format, shared by every logger (and by tests' services). */
function consoleSink(pretty: boolean): Sink {
  if (pretty) {
    if (consolePretty === undefined) {
      const format = prettyFactory({ translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true });
      // A terminal that went away (EIO after a hang-up) must not stop the service; the log file goes on.
      if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', () => {});
      // process.stdout is synchronous on a terminal (POSIX): nothing is left unwritten at exit.
      consolePretty = { write: (line: string) => void process.stdout.write(format(line)) };
    }
    return consolePretty;
  }
  // Asynchronous writes, flushed synchronously at exit by pino; a reader that went away (EPIPE)
  // silences the console and nothing else.
  consoleJson ??= pino.destination({ dest: 1, sync: false });
  return consoleJson;
}

interface FileSink extends Sink {
  close(): Promise<void>;
}

/**
 * The file is opened here, synchronously: a pino destination that opens its file in the background
 * is not ready for a few milliseconds, and a process that exits meanwhile (a start-up failure)
 * dies in pino's exit handler with "sonic boom is not ready yet".
 */
function fileSink(file: string, setting: string): FileSink {
  let fd: number;
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    fd = openSync(file, 'a');
  } catch (error) {
    throw new ConfigError(`${setting}: cannot open the log file ${file}: ${(error as Error).message}`);
  }
  const destination = pino.destination({ fd, sync: false });
  let closed: Promise<void> | undefined;
  return {
    write(line: string) {
      // A line logged after close (a late error) goes to the console only.
      if (closed === undefined) destination.write(line);
    },
    flushSync() {
      if (closed === undefined) destination.flushSync();
    },
    close() {
      return (closed ??= new Promise<void>((resolve) => {
        destination.once('close', () => resolve());
        destination.once('error', () => resolve());
        destination.end();
      }));
    },
  };
}

const files = new WeakMap<object, FileSink>();

/** JSON lines (human lines on a terminal) at `level`; keys and passwords are redacted. */
export function createLogger(options: LoggerOptions): Logger {
  const out = consoleSink(options.pretty ?? process.stdout.isTTY === true);
  const opts: pino.LoggerOptions = {
    level: options.level,
    ...(options.name === undefined ? {} : { name: options.name }),
    redact: { paths: REDACT, censor: '[redacted]' },
    hooks: {
      logMethod(args, method) {
        if (args[0] !== UNLOGGED) method.apply(this, args);
      },
    },
  };
  if (options.file === undefined) return pino(opts, out);
  const file = fileSink(options.file.path, options.file.setting);
  const logger = pino(
    opts,
    pino.multistream([
      { level: options.level, stream: out },
      { level: options.level, stream: file },
    ]),
  );
  files.set(logger, file);
  return logger;
}

/** Writes what is buffered and closes the logger's file; the console stays open for the others. */
export async function closeLogger(logger: Logger | undefined): Promise<void> {
  if (logger === undefined) return;
  logger.flush();
  await files.get(logger)?.close();
}
