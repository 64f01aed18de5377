/**
 * The collector logs to the console and to data_collector.log (COLLECTOR_LOG_FILE), as the original
 * did. Components take any pino-compatible logger (the API's Fastify logger in the all-in-one
 * process), so tests can pass their own.
 */
import { collectorLogPath, type Config } from '../config.js';
import { createLogger, type Logger } from '../logger.js';

export interface CollectorLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Console (human lines on a terminal, JSON otherwise) and the log file (JSON lines); close with `closeLogger`. */
export function createCollectorLogger(config: Pick<Config, 'logLevel' | 'collectorLogFile' | 'dataDir'>, name = 'collector'): Logger {
  const setting = config.collectorLogFile === undefined ? 'DATA_DIR' : 'COLLECTOR_LOG_FILE';
  return createLogger({ level: config.logLevel, name, file: { path: collectorLogPath(config), setting } });
}

/** A logger that drops everything (library use without logs). */
export const silentLogger: CollectorLogger = { debug() {}, info() {}, warn() {}, error() {} };
