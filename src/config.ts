/**
 * Every setting, read once from the environment (and a .env file in the working directory),
 * validated, with defaults. A bad value stops start-up with one line naming the setting.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_SPECS_FILE = fileURLToPath(new URL('../config/battery-specs.json', import.meta.url));

/** One day: a producer whose clock is further ahead is broken, not drifting. */
export const DEFAULT_MAX_CLOCK_SKEW_SECONDS = 86_400;
/** A hundred years: past it every timestamp up to the absolute bound (2100) is accepted anyway. */
const MAX_CLOCK_SKEW_LIMIT = 3_155_760_000;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  mongodbUri: string | undefined;
  databaseName: string;
  apiHost: string;
  apiPort: number;
  dataDir: string;
  corsOrigins: string[];
  retentionDays: number;
  collectorHost: string;
  collectorBinaryPort: number;
  collectorJsonPort: number;
  /** Maps a connection to a battery_id: rules `port:23460=pack-1`, `peer:10.0.0.7=pack-2`, comma separated. */
  collectorBatteryMap: string;
  collectorMaxConnections: number;
  collectorIdleTimeoutSeconds: number;
  /** Collector log file; unset: data_collector.log in DATA_DIR (see collectorLogPath). */
  collectorLogFile: string | undefined;
  spoolMaxBytes: number;
  logLevel: LogLevel;
  apiKey: string | undefined;
  readApiKey: string | undefined;
  batterySpecsFile: string;
  /**
   * How far ahead of the server clock a record's timestamp may be, in seconds. Producers' clocks
   * drift; a timestamp further ahead is a broken clock or a broken producer, and a record stored with
   * it would sit outside every time window until retention removed it (answered 422 instead).
   */
  maxClockSkewSeconds: number;
}

/** A setting's bad value; the message names the setting and never echoes a secret. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function text(env: Env, name: string, fallback: string): string {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? fallback : value;
}

function optionalSecret(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined || value === '') return undefined;
  if (value.length < 8) throw new ConfigError(`${name} must be at least 8 characters long`);
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^-?\d+$/.test(raw) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

const port = (env: Env, name: string, fallback: number) => integer(env, name, fallback, 0, 65535);

/**
 * Reads the settings. `env` defaults to process.env after loading `.env` from the working
 * directory (variables already set win, as with dotenv).
 */
export function loadConfig(env: Env = loadDotEnv()): Config {
  const mongodbUri = env.MONGODB_URI?.trim() || undefined;
  if (mongodbUri !== undefined && !/^mongodb(\+srv)?:\/\//.test(mongodbUri)) {
    // Never echo the value: it may hold a password.
    throw new ConfigError('MONGODB_URI must start with mongodb:// or mongodb+srv://');
  }
  const logLevel = text(env, 'LOG_LEVEL', 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const corsOrigins = text(env, 'CORS_ORIGINS', 'http://localhost:5173,http://localhost:3000')
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin !== '');
  for (const origin of corsOrigins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`CORS_ORIGINS must be a comma list of origins like http://host:port or *, got "${origin}"`);
    }
  }
  const databaseName = text(env, 'DATABASE_NAME', 'battery_db');
  if (!/^[A-Za-z0-9_-]{1,63}$/.test(databaseName)) {
    throw new ConfigError(`DATABASE_NAME must be 1-63 of A-Z a-z 0-9 _ -, got "${databaseName}"`);
  }
  const dataDir = path.resolve(text(env, 'DATA_DIR', './data'));
  const batterySpecsFile = path.resolve(text(env, 'BATTERY_SPECS_FILE', DEFAULT_SPECS_FILE));
  if (!existsSync(batterySpecsFile)) throw new ConfigError(`BATTERY_SPECS_FILE: no file at ${batterySpecsFile}`);
  return {
    mongodbUri,
    databaseName,
    apiHost: text(env, 'API_HOST', '0.0.0.0'),
    apiPort: port(env, 'API_PORT', 8000),
    dataDir,
    corsOrigins,
    retentionDays: integer(env, 'RETENTION_DAYS', 30, 0, 36_500),
    collectorHost: text(env, 'COLLECTOR_HOST', '0.0.0.0'),
    collectorBinaryPort: port(env, 'COLLECTOR_BINARY_PORT', 23456),
    collectorJsonPort: port(env, 'COLLECTOR_JSON_PORT', 23457),
    collectorBatteryMap: text(env, 'COLLECTOR_BATTERY_MAP', ''),
    collectorMaxConnections: integer(env, 'COLLECTOR_MAX_CONNECTIONS', 2000, 1, 100_000),
    collectorIdleTimeoutSeconds: integer(env, 'COLLECTOR_IDLE_TIMEOUT', 300, 0, 86_400),
    collectorLogFile: env.COLLECTOR_LOG_FILE?.trim() ? path.resolve(env.COLLECTOR_LOG_FILE.trim()) : undefined,
    spoolMaxBytes: integer(env, 'SPOOL_MAX_BYTES', 1024 * 1024 * 1024, 1024 * 1024, Number.MAX_SAFE_INTEGER),
    logLevel: logLevel as LogLevel,
    apiKey: optionalSecret(env, 'API_KEY'),
    readApiKey: optionalSecret(env, 'READ_API_KEY'),
    batterySpecsFile,
    maxClockSkewSeconds: integer(env, 'MAX_CLOCK_SKEW_SECONDS', DEFAULT_MAX_CLOCK_SKEW_SECONDS, 0, MAX_CLOCK_SKEW_LIMIT),
  };
}

/** Where the collector logs: COLLECTOR_LOG_FILE, else beside the data, wherever DATA_DIR points. */
export function collectorLogPath(config: Pick<Config, 'collectorLogFile' | 'dataDir'>): string {
  return config.collectorLogFile ?? path.join(config.dataDir, 'data_collector.log');
}

function loadDotEnv(): Env {
  if (existsSync('.env')) process.loadEnvFile('.env');
  return process.env;
}
