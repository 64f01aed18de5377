/**
 * A record the store refuses for itself (not an outage) never stops ingest: over TCP (the JSON
 * collector on real sockets, several connections) only that record is dropped, its neighbours in
 * the same read are stored and the connection goes on; over HTTP its request answers 422 naming it,
 * and the other requests are stored. On both stores, each made to refuse one record for real:
 *
 * - SQLite: a trigger the test adds to the real file aborts the insert of a record whose source is
 *   "poison", as a CHECK or NOT NULL constraint would.
 * - MongoDB (FerretDB v1.24, which has no collection validators and no partial indexes): a unique
 *   index the test creates on `timestamp`, with a document already stored at the poison record's
 *   timestamp. The server then refuses that one document with E11000 inside an unordered
 *   insertMany, as a real deployment with a unique index of its own would. Every other record of
 *   these tests has a timestamp of its own.
 *
 * Every poison record carries both marks, so one test body serves both stores.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Config } from '../../src/config.js';
import type { Service } from '../../src/server.js';
import { createSchema } from '../../src/store/sqlite-schema.js';
import { SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { connect, eventually } from '../collector/helpers.js';
import { mongoForTests } from '../support/mongo-server.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';

const NOW = Math.floor(Date.now() / 1000) - 3600;
/** The poison record's timestamp: MongoDB's unique index already holds it. */
const POISON_TIME = NOW - 1800;
let nextTime = NOW;
/** A reading with a timestamp no other record of these tests has. */
const reading = (battery_id: string, pack_voltage: number) => ({ timestamp: nextTime++, battery_id, pack_voltage, pack_current: -5, cell_temp: 25 });
const poison = (battery_id: string) => ({ timestamp: POISON_TIME, battery_id, source: 'poison', pack_voltage: 666, pack_current: -5, cell_temp: 25 });

interface StoreUnderTest {
  name: string;
  /** The reason the store's refusal is counted under. */
  reason: string;
  /** Settings of a service whose store refuses the poison records. */
  prepare(): Promise<Partial<Config>>;
  /** Names the test's store must never show a client (its host and port). */
  secrets: string[];
}

function sqlite(): StoreUnderTest {
  return {
    name: 'sqlite',
    reason: 'constraint',
    secrets: [],
    async prepare() {
      const dataDir = tempDir();
      const db = new Database(path.join(dataDir, SQLITE_FILE_NAME));
      createSchema(db);
      db.exec(`CREATE TRIGGER test_poison BEFORE INSERT ON battery_data WHEN NEW.source = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END`);
      db.close();
      return { dataDir };
    },
  };
}

const { server, freshDatabase, admin } = await mongoForTests('poison');

function mongodb(): StoreUnderTest {
  const hostPort = /^mongodb:\/\/([^/?]+)/.exec(server.uri)?.[1];
  return {
    name: 'mongodb',
    reason: 'duplicate_key',
    secrets: hostPort === undefined ? [] : [hostPort, 'mongodb://'],
    async prepare() {
      const databaseName = freshDatabase();
      const collection = admin.db(databaseName).collection('battery_data');
      await collection.insertOne({ ...poison('planted'), source: 'planted', received_at: POISON_TIME, time: new Date(POISON_TIME * 1000) });
      await collection.createIndex({ timestamp: 1 }, { unique: true, name: 'test_unique_timestamp' });
      return { mongodbUri: server.uri, databaseName };
    },
  };
}

async function metric(service: Service, series: string): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

async function history(service: Service, pack: string): Promise<{ pack_voltage: number; source: string }[]> {
  const response = await fetch(`${service.url}/api/battery-data/history?hours=24&limit=1000&battery_id=${pack}`);
  assert.equal(response.status, 200);
  return (await response.json()) as { pack_voltage: number; source: string }[];
}

const voltages = (records: { pack_voltage: number }[]) => records.map((r) => r.pack_voltage).sort((a, b) => a - b);
const lines = (records: object[]) => Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n');

for (const store of [sqlite(), mongodb()]) {
  describe(`a record the ${store.name} store refuses`, { timeout: 120_000 }, () => {
    let service: Service;
    before(async () => {
      service = await startTestService({ ...(await store.prepare()), logLevel: 'silent' }, { collector: true });
    });
    after(() => service?.close());

    it('over TCP: only that record is dropped; its neighbours, the other connections and what follows on its connection are stored', async () => {
      const jsonPort = service.collector!.jsonPort;
      const [a, b, c] = await Promise.all([connect(jsonPort), connect(jsonPort), connect(jsonPort)]);
      try {
        // One write each: the poison record arrives in the same read, and batch, as its neighbours.
        const first = [...[0, 1, 2, 3, 4].map((i) => reading('pack-a', 400 + i)), poison('pack-a'), ...[5, 6, 7, 8, 9].map((i) => reading('pack-a', 400 + i))];
        a.write(lines(first));
        b.write(lines([0, 1, 2, 3, 4].map((i) => reading('pack-b', 500 + i))));
        c.write(lines([0, 1, 2, 3, 4].map((i) => reading('pack-c', 600 + i))));
        const stored = () => metric(service, 'collector_records_stored_total{listener="json",kind="battery-data"}');
        await eventually(async () => (await stored()) === 20, 'the 20 good records stored');
        // The connection that sent the poison record goes on.
        a.write(lines([10, 11].map((i) => reading('pack-a', 400 + i))));
        await eventually(async () => (await stored()) === 22, 'what followed on that connection stored');
      } finally {
        for (const socket of [a, b, c]) socket.destroy();
      }
      assert.deepEqual(voltages(await history(service, 'pack-a')), [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411]);
      assert.deepEqual(voltages(await history(service, 'pack-b')), [500, 501, 502, 503, 504]);
      assert.deepEqual(voltages(await history(service, 'pack-c')), [600, 601, 602, 603, 604]);
      assert.equal(await metric(service, `ingest_records_refused_total{kind="battery-data",reason="${store.reason}"}`), 1);
      assert.equal(await metric(service, 'collector_rejected_total{listener="json",reason="store_refused"}'), 1);
      assert.equal(await metric(service, 'collector_backpressure'), 0);
    });

    it('over HTTP: its request answers 422 naming it and stores nothing; the requests beside it are stored', async () => {
      const post = async (body: unknown) => {
        const response = await fetch(`${service.url}/api/battery-data`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        return { status: response.status, text: await response.text() };
      };
      const [array, single, ...others] = await Promise.all([
        post([reading('pack-h1', 700), poison('pack-h1'), reading('pack-h1', 701)]),
        post(poison('pack-h2')),
        ...[0, 1, 2, 3, 4].map((i) => post(reading('pack-h3', 800 + i))),
      ]);
      assert.equal(array.status, 422, array.text);
      const detail = JSON.parse(array.text).detail as { loc: unknown[]; msg: string; type: string }[];
      assert.deepEqual(detail.map((d) => [d.loc, d.type]), [[['body', 1], 'value_error.store_refused']]);
      assert.match(detail[0]!.msg, /^the store refused this record: /);
      assert.equal(single.status, 422, single.text);
      assert.deepEqual(JSON.parse(single.text).detail[0].loc, ['body']);
      for (const secret of store.secrets) assert.ok(!array.text.includes(secret) && !single.text.includes(secret), `an answer names ${secret}`);
      assert.deepEqual(others.map((o) => o.status), [200, 200, 200, 200, 200]);
      assert.deepEqual(await history(service, 'pack-h1'), [], 'the refused request stored nothing');
      assert.deepEqual(await history(service, 'pack-h2'), []);
      assert.deepEqual(voltages(await history(service, 'pack-h3')), [800, 801, 802, 803, 804]);
      assert.equal(await metric(service, `ingest_records_refused_total{kind="battery-data",reason="${store.reason}"}`), 3);
    });
  });
}
