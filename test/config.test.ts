import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import path from 'node:path';
import { collectorLogPath, ConfigError, ConfigSchema, envExample, loadConfig } from '../src/config.js';

describe('settings', () => {
  it('has the documented defaults', () => {
    const config = loadConfig({});
    assert.equal(config.mongodbUri, undefined);
    assert.equal(config.databaseName, 'battery_db');
    assert.equal(config.apiHost, '0.0.0.0');
    assert.equal(config.apiPort, 8000);
    assert.equal(config.retentionDays, 30);
    assert.equal(config.collectorBinaryPort, 23456);
    assert.equal(config.collectorJsonPort, 23457);
    assert.deepEqual(config.corsOrigins, ['http://localhost:5173', 'http://localhost:3000']);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.apiKey, undefined);
    assert.equal(config.maxClockSkewSeconds, 86_400);
  });

  it('reads every setting from the environment', () => {
    const config = loadConfig({
      MONGODB_URI: 'mongodb+srv://user:pw@cluster0.example.net/',
      DATABASE_NAME: 'fleet',
      API_PORT: '9000',
      RETENTION_DAYS: '0',
      CORS_ORIGINS: 'https://ops.example.com, http://localhost:3000',
      LOG_LEVEL: 'WARN',
      API_KEY: 'a-long-write-key',
      MAX_CLOCK_SKEW_SECONDS: '300',
    });
    assert.equal(config.maxClockSkewSeconds, 300);
    assert.equal(config.databaseName, 'fleet');
    assert.equal(config.apiPort, 9000);
    assert.equal(config.retentionDays, 0);
    assert.deepEqual(config.corsOrigins, ['https://ops.example.com', 'http://localhost:3000']);
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.apiKey, 'a-long-write-key');
  });

  for (const [name, value, pattern] of [
    ['API_PORT', '80a', /^API_PORT must be a whole number/],
    ['API_PORT', '70000', /^API_PORT/],
    ['RETENTION_DAYS', '-1', /^RETENTION_DAYS/],
    ['LOG_LEVEL', 'loud', /^LOG_LEVEL must be one of/],
    ['CORS_ORIGINS', 'localhost:3000', /^CORS_ORIGINS/],
    ['DATABASE_NAME', 'a b', /^DATABASE_NAME/],
    ['BATTERY_SPECS_FILE', '/nonexistent/specs.json', /^BATTERY_SPECS_FILE/],
    ['API_KEY', 'short', /^API_KEY must be at least 8/],
    ['MAX_CLOCK_SKEW_SECONDS', '-1', /^MAX_CLOCK_SKEW_SECONDS must be a whole number from 0/],
    ['MAX_CLOCK_SKEW_SECONDS', '1.5', /^MAX_CLOCK_SKEW_SECONDS/],
    ['COLLECTOR_IDLE_TIMEOUT', '0x10', /^COLLECTOR_IDLE_TIMEOUT must be a whole number/],
    ['COLLECTOR_BATTERY_MAP', 'port:23460', /^COLLECTOR_BATTERY_MAP: .*"port:23460"/],
    ['COLLECTOR_BATTERY_MAP', 'port:23460=pack-1,port:23460=pack-2', /^COLLECTOR_BATTERY_MAP: port 23460 is mapped twice/],
  ] as const) {
    it(`stops on a bad ${name} with one line naming it`, () => {
      assert.throws(() => loadConfig({ [name]: value }), (error: Error) => error instanceof ConfigError && pattern.test(error.message) && !error.message.includes('\n'));
    });
  }

  it('puts the collector log in DATA_DIR unless COLLECTOR_LOG_FILE says otherwise, whatever DATA_DIR becomes', () => {
    const config = loadConfig({ DATA_DIR: '/srv/battery' });
    assert.equal(collectorLogPath(config), '/srv/battery/data_collector.log');
    assert.equal(collectorLogPath({ ...config, dataDir: '/tmp/other' }), '/tmp/other/data_collector.log');
    assert.equal(collectorLogPath(loadConfig({ COLLECTOR_LOG_FILE: '/var/log/collector.log' })), path.resolve('/var/log/collector.log'));
  });

  it('parses the battery map at start', () => {
    const { collectorBatteryMap } = loadConfig({ COLLECTOR_BATTERY_MAP: 'port:23460=pack-1, peer:10.0.0.7=pack-2' });
    assert.equal(collectorBatteryMap.byPort.get(23460), 'pack-1');
    assert.equal(collectorBatteryMap.byPeer.get('10.0.0.7'), 'pack-2');
  });

  it('reads only the environment it is given', () => {
    process.env.API_PORT = '1234';
    try {
      assert.equal(loadConfig({}).apiPort, 8000);
    } finally {
      delete process.env.API_PORT;
    }
  });

  it('gives every setting its variable, a description and a default (or says it may be unset)', () => {
    for (const [key, schema] of Object.entries(ConfigSchema.properties) as unknown as [string, Record<string, unknown>][]) {
      assert.match(String(schema.env), /^[A-Z][A-Z0-9_]+$/, key);
      assert.ok(typeof schema.description === 'string' && schema.description.length > 10, `${key} has a description`);
      assert.ok(schema.default !== undefined || !ConfigSchema.required.includes(key as never), `${key} has a default or is optional`);
    }
  });

  it('.env.example is what the schema generates (npm run generate writes it)', () => {
    assert.equal(readFileSync(new URL('../.env.example', import.meta.url), 'utf8'), envExample());
  });

  it('never echoes a MongoDB URI, which may hold a password', () => {
    assert.throws(
      () => loadConfig({ MONGODB_URI: 'postgres://admin:s3cret@db/' }),
      (error: Error) => /^MONGODB_URI/.test(error.message) && !error.message.includes('s3cret'),
    );
  });
});
