/**
 * Every setting as one schema: its environment variable, what it does, its default and its bounds.
 * The type of the settings is derived from it, .env.example is generated from it (npm run
 * generate; test/config.test.ts fails when they differ), and a bad value stops start-up with one
 * line naming the setting. The CLI reads the environment (and .env) once and passes it to
 * `loadConfig`; nothing else reads it.
 */
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type, type StaticDecode, type TSchema } from 'typebox';
import { Value } from 'typebox/value';
import { parseBatteryMap } from './collector/battery-map.js';

const PROJECT_ROOT = fileURLToPath(new URL('../', import.meta.url));
export const DEFAULT_SPECS_FILE = path.join(PROJECT_ROOT, 'config', 'battery-specs.json');

/** One day: a producer whose clock is further ahead is broken, not drifting. */
export const DEFAULT_MAX_CLOCK_SKEW_SECONDS = 86_400;
/** A hundred years: past it every timestamp up to the absolute bound (2100) is accepted anyway. */
const MAX_CLOCK_SKEW_LIMIT = 3_155_760_000;

/** A setting's bad value; the message names the setting and never echoes a secret. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * What each setting carries beside JSON Schema: `env`, its variable; `secret`, a value never echoed
 * in an error; `must`, what a good value looks like when JSON Schema's bounds do not say it.
 */
type Setting = {
  env: string;
  description: string;
  secret?: true;
  must?: string;
};

const setting = <const T extends Setting>(options: T): T => options;

const port = (env: string, fallback: number, description: string) =>
  Type.Integer(setting({ env, description, default: fallback, minimum: 0, maximum: 65_535 }));

/** A path, relative to the working directory. */
const filePath = <const T extends Setting & { default?: string }>(options: T) => Type.Decode(Type.String(options), (value) => path.resolve(value));

export const ConfigSchema = Type.Object({
  mongodbUri: Type.Optional(
    Type.String(
      setting({
        env: 'MONGODB_URI',
        description: 'MongoDB or Atlas connection string (mongodb+srv://...); unset: the embedded SQLite file in DATA_DIR',
        pattern: '^mongodb(\\+srv)?://',
        must: 'must start with mongodb:// or mongodb+srv://',
        secret: true,
      }),
    ),
  ),
  databaseName: Type.String(
    setting({ env: 'DATABASE_NAME', description: 'MongoDB database', default: 'battery_db', pattern: '^[A-Za-z0-9_-]{1,63}$', must: 'must be 1-63 of A-Z a-z 0-9 _ -' }),
  ),
  apiHost: Type.String(setting({ env: 'API_HOST', description: 'HTTP listen address', default: '0.0.0.0' })),
  apiPort: port('API_PORT', 8000, 'HTTP port of the API and the dashboard; 0: any free port'),
  dataDir: filePath({ env: 'DATA_DIR', description: 'SQLite file, the standalone collector spool and the collector log', default: './data' }),
  corsOrigins: Type.Array(
    Type.String({ pattern: '^(\\*|https?://[^/\\s]+)$' }),
    setting({
      env: 'CORS_ORIGINS',
      description: 'Comma list of browser origins allowed to call the API, or *',
      default: ['http://localhost:5173', 'http://localhost:3000'],
      must: 'must be a comma list of origins like http://host:port, or *',
    }),
  ),
  retentionDays: Type.Integer(
    setting({ env: 'RETENTION_DAYS', description: 'Records older than this are removed at start-up and hourly; 0 keeps everything', default: 30, minimum: 0, maximum: 36_500 }),
  ),
  collectorHost: Type.String(setting({ env: 'COLLECTOR_HOST', description: 'TCP collector listen address', default: '0.0.0.0' })),
  collectorBinaryPort: port('COLLECTOR_BINARY_PORT', 23_456, 'Binary frames (16 bytes: four little-endian float32)'),
  collectorJsonPort: port('COLLECTOR_JSON_PORT', 23_457, 'JSON messages, newline-delimited or back to back'),
  collectorV2Port: port('COLLECTOR_V2_PORT', 23_458, 'Edge protocol v2: sequenced, checksummed, acknowledged frames with pack id and device time (docs/protocol.md)'),
  collectorBatteryMap: Type.Decode(
    Type.String(
      setting({
        env: 'COLLECTOR_BATTERY_MAP',
        description:
          'Which battery_id the records of a TCP connection get: a comma list of rules port:23460=pack-1 (connections to that ' +
          'port, which the collector then listens on too) or peer:10.0.0.7=pack-2 (connections from that address); else "default"',
        default: '',
      }),
    ),
    parseBatteryMap,
  ),
  collectorMaxConnections: Type.Integer(
    setting({ env: 'COLLECTOR_MAX_CONNECTIONS', description: 'Open TCP connections, all listeners together; more are refused and counted', default: 2000, minimum: 1, maximum: 100_000 }),
  ),
  collectorMaxConnectionsPerAddress: Type.Integer(
    setting({
      env: 'COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS',
      description: 'Open TCP connections from one peer address, all listeners together; more are refused and counted',
      default: 256,
      minimum: 1,
      maximum: 100_000,
    }),
  ),
  collectorAllow: Type.Decode(
    Type.Array(
      Type.String(),
      setting({
        env: 'COLLECTOR_ALLOW',
        description:
          'Comma list of peer addresses or networks (10.0.0.7, 10.0.0.0/8, fd00::/8) the TCP collector accepts connections from; ' +
          'others are closed at once and counted; empty: every peer',
        default: [],
        must: 'must be a comma list of IP addresses or networks like 10.0.0.0/8',
      }),
    ),
    (entries) => entries.map(parseNetwork),
  ),
  collectorFirstByteTimeoutSeconds: Type.Integer(
    setting({
      env: 'COLLECTOR_FIRST_BYTE_TIMEOUT',
      description: 'Seconds a new TCP connection may stay silent before its first byte; then it is closed',
      default: 10,
      minimum: 1,
      maximum: 3600,
    }),
  ),
  collectorIdleTimeoutSeconds: Type.Integer(
    setting({ env: 'COLLECTOR_IDLE_TIMEOUT', description: 'Seconds a silent TCP connection is kept open; 0 keeps it forever', default: 300, minimum: 0, maximum: 86_400 }),
  ),
  collectorLogFile: Type.Optional(filePath({ env: 'COLLECTOR_LOG_FILE', description: 'Collector log file (JSON lines, beside the console); unset: data_collector.log in DATA_DIR' })),
  ingestMaxPendingRecords: Type.Integer(
    setting({
      env: 'INGEST_MAX_PENDING_RECORDS',
      description:
        'Records taken and not yet durable, all producers together; past it TCP sockets pause and HTTP writes answer 503 with Retry-After',
      default: 100_000,
      minimum: 1000,
      maximum: 10_000_000,
    }),
  ),
  apiMaxConnections: Type.Integer(
    setting({ env: 'API_MAX_CONNECTIONS', description: 'Open HTTP connections; more are closed at once', default: 1024, minimum: 1, maximum: 100_000 }),
  ),
  apiRequestTimeoutSeconds: Type.Integer(
    setting({
      env: 'API_REQUEST_TIMEOUT',
      description: 'Seconds a client has to send a whole request, headers and body; a slower one gets 408 and is closed',
      default: 30,
      minimum: 1,
      maximum: 3600,
    }),
  ),
  apiIdleTimeoutSeconds: Type.Integer(
    setting({
      env: 'API_IDLE_TIMEOUT',
      description: 'Seconds an HTTP connection may move no bytes either way before it is closed (live streams send a keep-alive comment sooner)',
      default: 60,
      minimum: 1,
      maximum: 3600,
    }),
  ),
  streamMaxSubscribers: Type.Integer(
    setting({ env: 'STREAM_MAX_SUBSCRIBERS', description: 'Open /api/stream subscriptions, all clients together; more answer 503', default: 500, minimum: 1, maximum: 100_000 }),
  ),
  streamMaxSubscribersPerAddress: Type.Integer(
    setting({
      env: 'STREAM_MAX_SUBSCRIBERS_PER_ADDRESS',
      description: 'Open /api/stream subscriptions from one client address; more answer 429',
      default: 50,
      minimum: 1,
      maximum: 100_000,
    }),
  ),
  noDataSeconds: Type.Integer(
    setting({
      env: 'NO_DATA_SECONDS',
      description: 'A pack silent for longer than this raises a no-data alarm, cleared by its next reading',
      default: 60,
      minimum: 1,
      maximum: 86_400 * 30,
    }),
  ),
  analyticsMaxGapSeconds: Type.Integer(
    setting({
      env: 'ANALYTICS_MAX_GAP_SECONDS',
      description: 'Two readings of a pack further apart than this are not integrated into charge and energy (the gap is counted)',
      default: 60,
      minimum: 1,
      maximum: 86_400,
    }),
  ),
  analyticsEnabled: Type.Boolean(
    setting({ env: 'ANALYTICS_ENABLED', description: 'Compute charge, energy, cycles, state of charge and health per pack from its readings (docs/analytics.md)', default: true }),
  ),
  analyticsEndOfLife: Type.Number(
    setting({
      env: 'ANALYTICS_END_OF_LIFE',
      description: 'State of health, in percent, at which a pack reaches its end of life (remaining life is counted to it); per pack at /api/batteries/{id}/specs',
      default: 80,
      minimum: 1,
      maximum: 99,
    }),
  ),
  analyticsTaperC: Type.Number(
    setting({
      env: 'ANALYTICS_TAPER_C',
      description: 'A pack is full when its voltage is at the full level and its charge current has tapered below this fraction of its capacity per hour (C-rate)',
      default: 0.05,
      minimum: 0.001,
      maximum: 1,
    }),
  ),
  webhookUrls: Type.Array(
    Type.String({ pattern: '^https?://[^\\s]+$' }),
    setting({
      env: 'WEBHOOK_URLS',
      description: 'Comma list of URLs that receive every alarm change as a signed JSON POST (more can be added at /api/webhooks)',
      default: [],
      must: 'must be a comma list of http:// or https:// URLs',
      // A receiver's URL often carries its token.
      secret: true,
    }),
  ),
  webhookSecret: Type.Optional(
    Type.String(
      setting({
        env: 'WEBHOOK_SECRET',
        description: 'HMAC-SHA256 secret that signs the notifications to WEBHOOK_URLS (X-Signature-256)',
        minLength: 16,
        must: 'must be at least 16 characters long',
        secret: true,
      }),
    ),
  ),
  publicUrl: Type.Optional(
    Type.String(
      setting({
        env: 'PUBLIC_URL',
        description: "The dashboard's address as webhook receivers reach it (pack links in notifications); unset: the address the API listens on",
        pattern: '^https?://[^\\s]+$',
        must: 'must be an http:// or https:// URL',
      }),
    ),
  ),
  instanceId: Type.Optional(
    Type.String(
      setting({
        env: 'INSTANCE_ID',
        description: 'Name of this instance among several on one MongoDB deployment (leases, /health); unset: host name and process id',
        pattern: '^[A-Za-z0-9._:-]{1,100}$',
        must: 'must be 1-100 of A-Z a-z 0-9 . _ : -',
      }),
    ),
  ),
  leaseSeconds: Type.Integer(
    setting({
      env: 'LEASE_SECONDS',
      description: "How long an instance's claim on a pack's alarms and analytics, or on periodic work, lasts unless renewed; a dead instance's work moves after it",
      default: 10,
      minimum: 2,
      maximum: 600,
    }),
  ),
  clusterPollMs: Type.Integer(
    setting({
      env: 'CLUSTER_POLL_MS',
      description: 'Without change streams, how often an instance reads what the others stored (live stream, alarms, analytics), in milliseconds',
      default: 200,
      minimum: 20,
      maximum: 10_000,
    }),
  ),
  spoolMaxBytes: Type.Integer(
    setting({ env: 'SPOOL_MAX_BYTES', description: "Bound of the standalone collector's disk spool, in bytes", default: 1024 ** 3, minimum: 1024 ** 2, maximum: Number.MAX_SAFE_INTEGER }),
  ),
  logLevel: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], setting({ env: 'LOG_LEVEL', description: 'Log level; debug adds a line per request', default: 'info' })),
  apiKey: Type.Optional(
    Type.String(setting({ env: 'API_KEY', description: 'When set, every write needs it (X-API-Key or Authorization: Bearer)', minLength: 8, must: 'must be at least 8 characters long', secret: true })),
  ),
  readApiKey: Type.Optional(
    Type.String(
      setting({
        env: 'READ_API_KEY',
        description: 'When set, every read and /docs need it or API_KEY (the dashboard signs in with it); /health stays open',
        minLength: 8,
        must: 'must be at least 8 characters long',
        secret: true,
      }),
    ),
  ),
  batterySpecsFile: Type.Decode(
    Type.String(setting({ env: 'BATTERY_SPECS_FILE', description: 'Pack specifications and monitoring thresholds that /api/dashboard serves', default: DEFAULT_SPECS_FILE })),
    (value) => {
      const file = path.resolve(value);
      if (!existsSync(file)) throw new ConfigError(`BATTERY_SPECS_FILE: no file at ${file}`);
      return file;
    },
  ),
  maxClockSkewSeconds: Type.Integer(
    setting({
      env: 'MAX_CLOCK_SKEW_SECONDS',
      // Producers' clocks drift; a timestamp further ahead is a broken clock or a broken producer, and
      // a record stored with it would sit outside every time window until retention removed it.
      description: "How far ahead of the server clock a record's timestamp may be, in seconds; one further ahead is refused (HTTP 422)",
      default: DEFAULT_MAX_CLOCK_SKEW_SECONDS,
      minimum: 0,
      maximum: MAX_CLOCK_SKEW_LIMIT,
    }),
  ),
});

export type Config = StaticDecode<typeof ConfigSchema>;
export type LogLevel = Config['logLevel'];

type SettingSchema = TSchema & Setting & Record<string, unknown>;
const SETTINGS = Object.entries(ConfigSchema.properties) as unknown as [keyof Config, SettingSchema][];
const settingOf = (key: string) => SETTINGS.find(([name]) => name === key)?.[1];

export type Environment = Readonly<Record<string, string | undefined>>;

/**
 * The settings from `env` (the CLI passes process.env after reading .env). Unset and empty
 * variables take their defaults; pass `{}` for the defaults alone.
 */
export function loadConfig(env: Environment): Config {
  const values: Record<string, unknown> = {};
  for (const [key, schema] of SETTINGS) {
    const text = env[schema.env]?.trim();
    if (text !== undefined && text !== '') values[key] = fromText(schema, text);
  }
  // Checked before decoding: Decode would first convert on its own terms ("1.5" to the integer 1).
  const [first] = Value.Errors(ConfigSchema, Value.Default(ConfigSchema, values));
  if (first !== undefined) {
    const schema = settingOf(first.instancePath.split('/')[1] ?? '');
    if (schema === undefined) throw new ConfigError(`bad settings: ${first.message}`);
    throw new ConfigError(`${schema.env} ${mustOf(schema)}${schema.secret ? '' : `, got "${env[schema.env]?.trim()}"`}`);
  }
  return Value.Decode(ConfigSchema, values);
}

/** Environment text as the schema's type. A whole number is digits only: "1.5", "0x10" and "1e3" stay text, and are refused. */
function fromText(schema: SettingSchema, text: string): unknown {
  if (schema.type === 'integer') return /^-?\d+$/.test(text) ? Number(text) : text;
  if (schema.type === 'number') return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
  if (schema.type === 'boolean') return /^(true|1|yes|on)$/i.test(text) ? true : /^(false|0|no|off)$/i.test(text) ? false : text;
  if (schema.type === 'array') return text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  if (Array.isArray(schema.enum)) return text.toLowerCase();
  return text;
}

function mustOf(schema: SettingSchema): string {
  if (schema.must !== undefined) return schema.must;
  if (schema.type === 'integer') return `must be a whole number from ${String(schema.minimum)} to ${String(schema.maximum)}`;
  if (schema.type === 'number') return `must be a number from ${String(schema.minimum)} to ${String(schema.maximum)}`;
  if (schema.type === 'boolean') return 'must be true or false';
  if (Array.isArray(schema.enum)) return `must be one of ${schema.enum.join(', ')}`;
  return 'is not valid';
}

/** A network of COLLECTOR_ALLOW: an address (a network of one) or address/prefix. */
export interface Network {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

function parseNetwork(text: string): Network {
  const [address = '', prefixText, ...rest] = text.split('/');
  const version = isIP(address);
  const family = version === 6 ? 'ipv6' : 'ipv4';
  const bits = version === 6 ? 128 : 32;
  const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : Number.NaN;
  if (version === 0 || rest.length > 0 || !(prefix >= 0 && prefix <= bits)) {
    throw new ConfigError(`COLLECTOR_ALLOW must be a comma list of IP addresses or networks like 10.0.0.0/8, got "${text}"`);
  }
  return { address, prefix, family };
}

/** Where the collector logs: COLLECTOR_LOG_FILE, else beside the data, wherever DATA_DIR points. */
export function collectorLogPath(config: Pick<Config, 'collectorLogFile' | 'dataDir'>): string {
  return config.collectorLogFile ?? path.join(config.dataDir, 'data_collector.log');
}

/** .env.example: every setting, commented out at its default, with its description. */
export function envExample(): string {
  const lines = [
    '# Settings of battery-monitor: copy to .env in the working directory and uncomment what you change.',
    '# Variables set in the environment win over .env. Generated from src/config.ts by `npm run generate`.',
  ];
  for (const [, schema] of SETTINGS) {
    const values = Array.isArray(schema.enum) ? ` One of ${schema.enum.join(', ')}.` : '';
    lines.push('', ...comment(`${schema.description}.${values}`), `# ${schema.env}=${exampleOf(schema.default)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Text as `# ` lines of at most 100 characters. */
function comment(text: string): string[] {
  const lines: string[] = [];
  let line = '#';
  for (const word of text.split(' ')) {
    if (line.length + 1 + word.length > 100 && line !== '#') {
      lines.push(line);
      line = '#';
    }
    line += ` ${word}`;
  }
  return [...lines, line];
}

/** A default as it is written in .env: lists comma-joined, the project's own files relative to it (where `npm start` runs). */
function exampleOf(value: unknown): string {
  if (value === undefined) return '';
  if (Array.isArray(value)) return value.join(',');
  if (typeof value === 'string' && path.isAbsolute(value) && value.startsWith(PROJECT_ROOT)) return path.relative(PROJECT_ROOT, value);
  return String(value);
}
