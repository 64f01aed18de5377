/**
 * Records stamped outside the time the API accepts (before 2000 or after 2100), stored before that
 * bound existed, are removed when the store starts: a reading stamped 1e300 no longer owns
 * "latest", and the pack's count and last-seen time are right again. On a real SQLite file and a
 * real MongoDB-wire server, the bad records written with a raw client before the service starts.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { MongoClient } from 'mongodb';
import pino from 'pino';
import { appServerOptions, batteryMonitor } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { MAX_TIMESTAMP, MIN_TIMESTAMP } from '../../src/records/schemas.js';
import { openMongoStore } from '../../src/store/mongodb-store.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import { call, testConfig } from '../support/helper.js';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';
import { tempDir } from '../support/temp-dir.js';
import { batchOf, data } from './conformance.js';

const NOW = Math.floor(Date.now() / 1000) - 600;

/** The app with its log lines kept, ready; closed after the test. */
async function appWithLog(t: { after(fn: () => Promise<void>): void }, overrides: Partial<Config>): Promise<{ app: FastifyInstance; log: string[] }> {
  const log: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      log.push(String((JSON.parse(chunk.toString()) as { msg?: unknown }).msg));
      done();
    },
  });
  const config = testConfig({ ...overrides, logLevel: 'info' });
  const loggerInstance: FastifyBaseLogger = pino({ level: 'info' }, stream);
  const app = Fastify({ ...appServerOptions(config), loggerInstance });
  t.after(() => app.close());
  await app.register(batteryMonitor, { config });
  await app.ready();
  return { app, log };
}

/** What the service shows of pack `pack` after start: its latest reading, its history and its count. */
async function shown(app: FastifyInstance, pack: string) {
  const latest = await call(app, `/api/battery-data/latest?battery_id=${pack}`);
  const anyPack = await call(app, '/api/battery-data/latest');
  const history = await call(app, `/api/battery-data/history?battery_id=${pack}&hours=1`);
  const { batteries } = (await call(app, '/api/batteries')).body as { batteries: { battery_id: string; last_seen: number; counts: Record<string, number> }[] };
  return {
    latest: [latest.status, latest.body.timestamp, anyPack.body.timestamp],
    history: (history.body as { timestamp: number }[]).map((r) => r.timestamp),
    summary: batteries.filter((b) => b.battery_id === pack).map((b) => [b.counts['battery-data'], b.last_seen]),
  };
}

const removedLine = (log: string[]) => log.filter((line) => /removed \d+ records stamped before 2000-01-01T00:00:00\.000Z or after 2100-01-01T00:00:00\.000Z/.test(line));

describe('start-up repair of records stamped outside 2000-2100', { timeout: 120_000 }, () => {
  it('sqlite: the rows are gone, the real newest reading is latest, and counts, last-seen and rollups are right', async (t) => {
    const dataDir = tempDir();
    // The schema as the store makes it, with a real reading and its summary.
    const before = await openSqliteStore(dataDir);
    assert.ok((await before.write([batchOf('battery-data', [data(NOW - 60, 'pack-r', 401), data(NOW, 'pack-r', 402)])]))[0]?.ok);
    await before.close();
    // Then what an earlier version stored without a bound: a row stamped 1e300 and one stamped 5 s
    // after 1970, with the pack summary and rollups such writes kept.
    const raw = new Database(before.file);
    const insert = raw.prepare(
      `INSERT INTO battery_data (timestamp, received_at, source, battery_id, pack_voltage, pack_current, cell_temp) VALUES (?, ?, 'bms', 'pack-r', 399, -5, 25)`,
    );
    insert.run(1e300, NOW);
    insert.run(5, NOW);
    raw.prepare(`UPDATE battery_summary SET count = count + 2, last_seen = 1e300 WHERE battery_id = 'pack-r' AND kind = 'battery-data'`).run();
    for (const [bucket, table] of [[1e300, 'battery_data_rollup_60'], [0, 'battery_data_rollup_60'], [1e300, 'battery_data_rollup_3600'], [0, 'battery_data_rollup_3600']] as const) {
      raw.prepare(
        `INSERT INTO ${table} (battery_id, bucket, count, min_pack_voltage, max_pack_voltage, sum_pack_voltage, min_pack_current, max_pack_current,
           sum_pack_current, min_cell_temp, max_cell_temp, sum_cell_temp) VALUES ('pack-r', ?, 1, 399, 399, 399, -5, -5, -5, 25, 25, 25)`,
      ).run(bucket);
    }
    raw.close();

    const { app, log } = await appWithLog(t, { dataDir });
    assert.deepEqual(await shown(app, 'pack-r'), {
      latest: [200, NOW, NOW],
      history: [NOW, NOW - 60],
      summary: [[2, NOW]],
    });
    assert.equal(removedLine(log).length, 1, log.join('\n'));
    assert.match(removedLine(log)[0]!, /removed 2 records/);
    const check = new Database(before.file, { readonly: true });
    try {
      assert.equal(check.prepare('SELECT count(*) FROM battery_data WHERE timestamp < ? OR timestamp > ?').pluck().get(MIN_TIMESTAMP, MAX_TIMESTAMP), 0);
      for (const table of ['battery_data_rollup_60', 'battery_data_rollup_3600']) {
        const rows = check.prepare(`SELECT bucket, count FROM ${table} WHERE battery_id = 'pack-r'`).all() as { bucket: number; count: number }[];
        assert.ok(rows.every((row) => row.bucket >= MIN_TIMESTAMP && row.bucket <= MAX_TIMESTAMP), `${table}: ${JSON.stringify(rows)}`);
        assert.equal(rows.reduce((n, row) => n + row.count, 0), 2, table);
      }
    } finally {
      check.close();
    }
  });

  describe('mongodb', { skip: process.env.MONGODB_TEST_URI ? 'the test drops its database: not on a server of your own' : false }, () => {
    let server: MongoTestServer | undefined;
    after(() => server?.stop());

    it('the documents are gone, the real newest reading is latest, and the count and last-seen are right', async (t) => {
      server = await startMongoServer();
      const databaseName = `repair_${process.pid}`;
      const before = await openMongoStore({ uri: server.uri, databaseName, retentionDays: 0 });
      assert.ok((await before.write([batchOf('battery-data', [data(NOW - 60, 'pack-r', 401), data(NOW, 'pack-r', 402)])]))[0]?.ok);
      await before.close();
      const client = new MongoClient(server.uri);
      try {
        const db = client.db(databaseName);
        const bad = (timestamp: number) => ({ timestamp, time: new Date(Math.floor(timestamp * 1000)), received_at: NOW, source: 'bms', battery_id: 'pack-r', pack_voltage: 399, pack_current: -5, cell_temp: 25 });
        await db.collection('battery_data').insertMany([bad(1e300), bad(5)]);
        await db.collection('battery_summary').updateOne({ _id: 'pack-r/battery-data' as never }, { $inc: { count: 2 }, $max: { last_seen: 1e300 } });
      } finally {
        await client.close();
      }

      const { app, log } = await appWithLog(t, { mongodbUri: server.uri, databaseName, retentionDays: 0 });
      assert.deepEqual(await shown(app, 'pack-r'), {
        latest: [200, NOW, NOW],
        history: [NOW, NOW - 60],
        summary: [[2, NOW]],
      });
      assert.equal(removedLine(log).length, 1, log.join('\n'));
      assert.match(removedLine(log)[0]!, /removed 2 records/);
    });
  });
});
