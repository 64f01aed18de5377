/**
 * The MongoDB alarm store against a real server (test/support/mongo-server.ts: MONGODB_TEST_URI, else
 * mongod, else FerretDB on SQLite), each store on a database of its own.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ALARM_COLLECTIONS, MongoAlarmStore } from '../../src/alarms/mongodb-alarm-store.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { mongoForTests } from '../support/mongo-server.js';
import { alarm, alarmStoreConformance, event, outboxOf, pack, webhook } from './alarm-store-conformance.js';

const { server, freshDatabase, admin } = await mongoForTests('alarm_store_test');
const open = (databaseName: string) => new MongoAlarmStore({ uri: server.uri, databaseName });

alarmStoreConformance(`mongodb on ${server.description}`, async () => {
  const databaseName = freshDatabase();
  return { store: open(databaseName), reopen: async () => open(databaseName) };
});

describe(`MongoDB alarm store specifics on ${server.description}`, () => {
  it('finishes at load a write cut short after the pack states: the alarms and events a pack carried reach their collections', async () => {
    const databaseName = freshDatabase();
    const raised = alarm('r', 'p', 1);
    // What apply leaves when the process dies between writing the pack documents and moving their changes.
    await admin
      .db(databaseName)
      .collection(ALARM_COLLECTIONS.packs)
      .insertOne({ _id: 'p' as never, state: pack('p', [raised]), pending: { token: 'x', alarms: [raised], events: [event(raised, 1, 'raised')] } });
    const store = open(databaseName);
    try {
      const loaded = await store.load();
      assert.deepEqual(loaded.packs, [pack('p', [raised])]);
      assert.deepEqual(await store.alarm(raised.id), { ...raised, events: [event(raised, 1, 'raised')] });
      const doc = await admin.db(databaseName).collection(ALARM_COLLECTIONS.packs).findOne({ _id: 'p' as never });
      assert.equal(doc?.pending, undefined);
    } finally {
      await store.close();
    }
  });

  it('finishes at load a write cut short with notifications: the outbox rows the pack carried are pending, one already delivered stays so', async () => {
    const databaseName = freshDatabase();
    const raised = alarm('r', 'p', 1);
    const hook = webhook('w');
    const row = outboxOf(raised, event(raised, 1, 'raised'), [hook])[0]!;
    const second = outboxOf(raised, event(raised, 2, 'acknowledged'), [hook])[0]!;
    const delivered = { ...second, state: 'delivered' as const, attempt_count: 1, delivered_at: second.created_at + 1 };
    const db = admin.db(databaseName);
    await db.collection(ALARM_COLLECTIONS.webhooks).insertOne({ ...hook, _id: hook.id as never });
    await db.collection(ALARM_COLLECTIONS.outbox).insertOne({ ...delivered, _id: delivered.id as never });
    await db.collection(ALARM_COLLECTIONS.packs).insertOne({
      _id: 'p' as never,
      state: pack('p', [raised]),
      pending: { token: 'x', alarms: [raised], events: [event(raised, 1, 'raised'), event(raised, 2, 'acknowledged')], outbox: [row, second] },
    });
    const store = open(databaseName);
    try {
      const loaded = await store.load();
      assert.deepEqual(loaded.webhooks, [hook]);
      assert.deepEqual(loaded.outbox, [row]);
      assert.deepEqual(await store.deliveries('w', 10), [delivered, row].sort((a, b) => b.seq - a.seq));
    } finally {
      await store.close();
    }
  });

  it('answers StoreUnavailableError, naming no credentials, when the server is away', async () => {
    const store = new MongoAlarmStore({ uri: 'mongodb://someone:s3cret-pass@127.0.0.1:1/', databaseName: 'x', serverSelectionTimeoutMs: 200 });
    try {
      await assert.rejects(store.load(), (error: Error) => error instanceof StoreUnavailableError && !error.message.includes('s3cret-pass'));
    } finally {
      await store.close();
    }
  });
});
