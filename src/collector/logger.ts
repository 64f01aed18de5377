/**
 * The collector logs to the console and to data_collector.log (COLLECTOR_LOG_FILE), as the original
 * did. Components take any pino-compatible logger (the API's Fastify logger in the all-in-one
 * process), so tests can pass their own.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { collectorLogPath, type Config } from '../config.js';

export interface CollectorLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Never let a key reach a log line, whatever a caller passes. */
const REDACT = ['apiKey', 'api_key', 'headers["x-api-key"]', '*.apiKey', '*.headers["x-api-key"]', 'config.apiKey', 'config.readApiKey', 'config.mongodbUri'];

export function createCollectorLogger(config: Pick<Config, 'logLevel' | 'collectorLogFile' | 'dataDir'>, name = 'collector'): pino.Logger {
  const file = collectorLogPath(config);
  mkdirSync(path.dirname(file), { recursive: true });
  const level = config.logLevel;
  // A closed console (a pipe whose reader went away) must not stop the collector; the file goes on.
  if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', () => {});
  const streams = pino.multistream([
    { level, stream: process.stdout },
    { level, stream: pino.destination({ dest: file, mkdir: true, sync: false }) },
  ]);
  return pino({ level, name, redact: { paths: REDACT, censor: '[redacted]' } }, streams);
}

/** A logger that drops everything (library use without logs). */
export const silentLogger: CollectorLogger = { debug() {}, info() {}, warn() {}, error() {} };
