/**
 * A write's outcome says which records it stored and which it skipped because their idempotency key
 * was stored already (WriteOutcome.existing), on every store: what runs after a commit publishes
 * only what was stored. A record the store refuses for itself fails its batch with a
 * RecordRefusedError naming it (the ingest sink then refuses only that record). SQLite in a temp dir; MongoDB on a real wire server, on its plain-collection
 * path (a unique _id refuses the copy) and on its time-series path (keys looked up first).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openMongoStore } from '../../src/store/mongodb-store.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite-store.js';
import { RecordRefusedError, type Store, type WriteOutcome } from '../../src/store/store.js';
import { mongoForTests } from '../support/mongo-server.js';
import { tempDir } from '../support/temp-dir.js';
import { batchOf, data, type TestRecord } from './conformance.js';

const NOW = 1_732_700_000;
const keyed = (key: string, t: number, pack = 'pack-k') => ({ ...data(t, pack), key }) satisfies TestRecord;

function ok(outcome: WriteOutcome | undefined): { ids: string[]; existing: number[] } {
  assert.ok(outcome?.ok, `write failed: ${outcome && !outcome.ok ? outcome.error.message : ''}`);
  return outcome;
}

/** Makes the store refuse, for itself, every record stamped `timestamp` (see refuseAt below). */
type RefuseAt = (store: Store, timestamp: number) => Promise<void>;

function writeOutcomes(name: string, open: () => Promise<Store>, refuseAt: RefuseAt): void {
  describe(`write outcomes: ${name}`, () => {
    it('fails a batch with a record the store refuses, naming the record and why; the other batches of the write are stored', async () => {
      const store = await open();
      try {
        await refuseAt(store, NOW + 1);
        const [refused, neighbour] = await store.write([
          batchOf('battery-data', [data(NOW, 'pack-r'), data(NOW + 1, 'pack-r'), data(NOW + 2, 'pack-r')]),
          batchOf('battery-data', [data(NOW + 3, 'pack-n')]),
        ]);
        assert.ok(refused !== undefined && !refused.ok);
        assert.ok(refused.error instanceof RecordRefusedError, String(refused.error));
        assert.deepEqual(refused.error.rows, [1]);
        assert.match(refused.error.reason, /^(constraint|duplicate_key)$/);
        ok(neighbour);
        assert.deepEqual(await store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-r' }), [], 'the refused batch stored nothing');
        assert.equal((await store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-n' })).length, 1);
      } finally {
        await store.close();
      }
    });

    it('refuses a keyed record the store refuses for another reason than its key: not taken as stored before', async () => {
      const store = await open();
      try {
        await refuseAt(store, NOW + 1);
        const [outcome] = await store.write([batchOf('battery-data', [keyed('r:0', NOW), keyed('r:1', NOW + 1)])]);
        assert.ok(outcome !== undefined && !outcome.ok, 'not an ok with r:1 "existing"');
        assert.ok(outcome.error instanceof RecordRefusedError, String(outcome.error));
        assert.deepEqual(outcome.error.rows, [1]);
      } finally {
        await store.close();
      }
    });

    it('lists nothing as existing when everything is new, keyed or not', async () => {
      const store = await open();
      try {
        const result = ok((await store.write([batchOf('battery-data', [data(NOW), keyed('a:0', NOW + 1), data(NOW + 2)])]))[0]);
        assert.equal(result.ids.length, 3);
        assert.deepEqual(result.existing, []);
      } finally {
        await store.close();
      }
    });

    it('lists the records whose key was stored by an earlier write, answering their stored ids', async () => {
      const store = await open();
      try {
        const first = ok((await store.write([batchOf('battery-data', [keyed('b:0', NOW), keyed('b:1', NOW + 1)])]))[0]);
        const retry = ok(
          (await store.write([batchOf('battery-data', [data(NOW + 5), keyed('b:1', NOW + 1), keyed('b:2', NOW + 2), keyed('b:0', NOW)])]))[0],
        );
        assert.deepEqual(retry.existing, [1, 3]);
        assert.equal(retry.ids[1], first.ids[1]);
        assert.equal(retry.ids[3], first.ids[0]);
        assert.equal(new Set(retry.ids).size, 4);
        assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 4);
      } finally {
        await store.close();
      }
    });

    it('stores a key repeated within one write once: the first is new, the repeats existing, across requests too', async () => {
      const store = await open();
      try {
        const [one, two] = await store.write([
          batchOf('battery-data', [keyed('c:0', NOW), keyed('c:0', NOW)]),
          batchOf('battery-data', [keyed('c:0', NOW), keyed('c:1', NOW + 1)]),
        ]);
        const a = ok(one);
        const b = ok(two);
        assert.deepEqual(a.existing, [1]);
        assert.deepEqual(b.existing, [0]);
        assert.equal(a.ids[0], a.ids[1]);
        assert.equal(b.ids[0], a.ids[0]);
        assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 2);
        // Counted once each in the pack summary, as stored.
        assert.equal((await store.batteries()).find((p) => p.battery_id === 'pack-k')?.counts['battery-data'], 2);
      } finally {
        await store.close();
      }
    });
  });
}

// A trigger on the real file, as a CHECK constraint would refuse the record.
writeOutcomes('sqlite', () => openSqliteStore(tempDir()), async (store, timestamp) => {
  const db = new Database((store as SqliteStore).file);
  db.exec(`CREATE TRIGGER test_refuse BEFORE INSERT ON battery_data WHEN NEW.timestamp = ${timestamp} BEGIN SELECT RAISE(ABORT, 'refused'); END`);
  db.close();
});

const { server, freshDatabase, admin } = await mongoForTests('outcome_test');
/** The database of the store opened last: the one a test's refusal is planted in. */
let databaseName = '';
const openMongo = (timeseriesPaths: boolean) => () => {
  databaseName = freshDatabase();
  return openMongoStore({ uri: server.uri, databaseName, retentionDays: 30, timeseriesPaths });
};
// FerretDB has neither collection validators nor partial indexes: a unique index on timestamp, with
// a document already stored at that time, makes the server refuse the record (E11000) for itself.
const refuseInMongo: RefuseAt = async (_store, timestamp) => {
  const collection = admin.db(databaseName).collection('battery_data');
  await collection.insertOne({ ...data(timestamp, 'planted'), time: new Date(timestamp * 1000) });
  await collection.createIndex({ timestamp: 1 }, { unique: true, name: 'test_unique_timestamp' });
};
writeOutcomes(`mongodb on ${server.description}`, openMongo(false), refuseInMongo);
writeOutcomes(`mongodb on ${server.description}, time-series paths`, openMongo(true), refuseInMongo);
