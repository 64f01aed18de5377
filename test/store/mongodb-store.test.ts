/**
 * The MongoDB store against a real server (test/support/mongo-server.ts: MONGODB_TEST_URI, else
 * mongod, else FerretDB on SQLite), each store on a database of its own.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ObjectId } from 'mongodb';
import { openMongoStore, type MongoStore, type MongoStoreOptions } from '../../src/store/mongodb-store.js';
import { planBuckets } from '../../src/store/buckets.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { mongoForTests, startMongoServer } from '../support/mongo-server.js';
import { batchOf, data, performance, storeConformance } from './conformance.js';

const NOW = 1_732_700_000;
const { server, freshDatabase, admin } = await mongoForTests('store_test');
const open = (databaseName = freshDatabase(), options: Partial<MongoStoreOptions> = {}) =>
  openMongoStore({ uri: server.uri, databaseName, retentionDays: 30, ...options });

async function withStore(body: (store: MongoStore, databaseName: string) => Promise<void>, databaseName = freshDatabase()) {
  const store = await open(databaseName);
  try {
    await body(store, databaseName);
  } finally {
    await store.close();
  }
}

// atomicRequests: false. A request is all or nothing only as far as the server allows: without
// multi-document transactions (FerretDB, standalone mongod, and time-series collections anywhere)
// a connection lost in the middle of an insertMany can leave part of a request stored. What the
// store does guarantee is tested below ("fails a request with a bad record as a whole").
storeConformance(`mongodb on ${server.description}`, { open: () => open(), atomicRequests: false });

// The time-series read and write paths (time-field filters, newest-first reads narrowed by the time
// field, idempotency keys looked up instead of a unique _id) run on plain collections too: where
// the server has no time-series collections, this is how they are tested.
const timeseriesPathsToo = await (async () => {
  const probe = await open();
  const mode = (await probe.health()).mode;
  await probe.close();
  return mode !== 'timeseries';
})();
if (timeseriesPathsToo) {
  storeConformance(`mongodb on ${server.description}, time-series paths on plain collections`, {
    open: () => open(undefined, { timeseriesPaths: true }),
    atomicRequests: false,
  });
}

describe(`MongoDB store specifics on ${server.description}`, () => {
  it('reads the original service\'s documents as battery "default", new documents beside them', async () => {
    const databaseName = freshDatabase();
    const legacy = admin.db(databaseName).collection('battery_data');
    // As the original FastAPI service stored them: ObjectId _id, float timestamp, no battery_id.
    const legacyIds = [new ObjectId(), new ObjectId(), new ObjectId()];
    await legacy.insertMany([
      { _id: legacyIds[0], timestamp: NOW - 7200.5, pack_voltage: 390.5, pack_current: -3, cell_temp: 22.5, source: 'battery_monitor' },
      { _id: legacyIds[1], timestamp: NOW - 60.25, pack_voltage: 391.5, pack_current: -4, cell_temp: 23, source: 'battery_monitor' },
      // Older still: no source either.
      { _id: legacyIds[2], timestamp: NOW - 30, pack_voltage: 392, pack_current: -5, cell_temp: 24 },
    ]);
    await admin.db(databaseName).collection('battery_predictions').insertOne({
      timestamp: NOW - 10, remaining_life_hours: 15000.5, remaining_cycles: 1200, degradation_rate: 0.021, source: 'battery_ai_predictor',
    });

    await withStore(async (store) => {
      assert.equal((await store.health()).mode, 'plain', 'an existing plain collection keeps the database plain');
      const latest = await store.latest('battery-data', 'default');
      assert.deepEqual(latest, {
        _id: legacyIds[2]!.toHexString(),
        timestamp: NOW - 30,
        received_at: NOW - 30,
        source: 'battery_monitor',
        battery_id: 'default',
        pack_voltage: 392,
        pack_current: -5,
        cell_temp: 24,
      });
      assert.equal((await store.latest('battery-prediction'))?.battery_id, 'default');
      // A document without a source reads as the kind's default source, and a source filter finds it so.
      assert.equal((await store.latest('battery-data', undefined, 'battery_monitor'))?._id, legacyIds[2]!.toHexString());
      assert.deepEqual(
        (await store.history('battery-data', { since: 0, limit: 10, batteryId: 'default', source: 'battery_monitor' })).map((r) => r.pack_voltage),
        [392, 391.5, 390.5],
      );
      assert.equal(await store.latest('battery-data', 'default', 'another_source'), null);
      // The legacy documents are counted once per database, in the background after set-up.
      await store.settled();
      assert.deepEqual(await store.batteries(), [
        {
          battery_id: 'default',
          last_seen: NOW - 10,
          counts: { 'battery-data': 3, 'battery-performance': 0, 'battery-prediction': 1 },
          last_seen_by_kind: { 'battery-data': NOW - 30, 'battery-prediction': NOW - 10 },
        },
      ]);

      const [outcome] = await store.write([batchOf('battery-data', [data(NOW, 'default', 399), data(NOW + 1, 'pack-1', 400)])]);
      assert.ok(outcome?.ok);
      const defaults = await store.history('battery-data', { since: 0, limit: 10, batteryId: 'default' });
      assert.deepEqual(defaults.map((r) => r.pack_voltage), [399, 392, 391.5, 390.5]);
      assert.ok(defaults.every((r) => r.battery_id === 'default'));
      assert.deepEqual((await store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-1' })).map((r) => r.pack_voltage), [400]);

      const exported = [];
      for await (const record of store.exportRange('battery-data', { from: 0, to: NOW + 10, batteryId: 'default' })) exported.push(record._id);
      assert.deepEqual(exported.slice(0, 3), legacyIds.map((id) => id.toHexString()));

      const plan = planBuckets(NOW - 3600, NOW + 3600, 2);
      const [bucket] = await store.aggregate('battery-data', { ...plan, batteryId: 'default' });
      assert.equal(bucket?.count, 3);
      assert.equal(bucket?.max.pack_voltage, 399);

      assert.equal(await store.deleteOlderThan(NOW - 3600), 1);
      const counts = (await store.batteries()).find((b) => b.battery_id === 'default')?.counts;
      assert.equal(counts?.['battery-data'], 3);
    }, databaseName);

    // A second start on the same database does not count them again.
    await withStore(async (store) => {
      await store.settled();
      const counts = (await store.batteries()).find((b) => b.battery_id === 'default')?.counts;
      assert.deepEqual(counts, { 'battery-data': 3, 'battery-performance': 0, 'battery-prediction': 1 });
    }, databaseName);
  });

  it('decides its mode by asking the server, says it in health() and logs it', async () => {
    const logged: string[] = [];
    const logger = { info: (line: string) => logged.push(line), warn: (line: string) => logged.push(line) };
    const databaseName = freshDatabase();
    const store = await open(databaseName, { logger });
    try {
      const health = await store.health();
      const types = new Map(
        (await admin.db(databaseName).listCollections({}, { nameOnly: false }).toArray()).map((info) => [info.name, info.type]),
      );
      const expected = types.get('battery_data') === 'timeseries' ? 'timeseries' : 'plain';
      assert.deepEqual(health, { ok: true, store: 'mongodb', mode: expected });
      for (const name of ['battery_performance', 'battery_predictions']) assert.equal(types.get(name), types.get('battery_data'));
      // FerretDB has no time-series collections: this is what the server answers there.
      if (server.kind === 'ferretdb') assert.equal(health.mode, 'plain');
      if (expected === 'plain') {
        const indexes = await admin.db(databaseName).collection('battery_data').indexes();
        assert.ok(indexes.some((index) => index.name === 'battery_time'));
        assert.deepEqual(indexes.find((index) => index.name === 'battery_time')?.key, { battery_id: 1, timestamp: 1, _id: 1 });
      }
      assert.ok(logged.some((line) => line.includes(`mode ${expected}`)), logged.join('\n'));
    } finally {
      await store.close();
    }
  });

  it('acknowledges writes with majority write concern when the server is a replica set', { skip: server.kind !== 'ferretdb' && 'needs a server started as a replica set member' }, async () => {
    const replica = await startMongoServer({ replicaSetName: 'rs0' });
    const logged: string[] = [];
    const store = await openMongoStore({
      uri: replica.uri,
      databaseName: 'majority',
      retentionDays: 30,
      logger: { info: (line) => logged.push(line), warn: (line) => logged.push(line) },
    });
    try {
      assert.ok((await store.write([batchOf('battery-data', [data(NOW)])]))[0]?.ok);
      assert.ok(logged.some((line) => line.includes('write concern majority')), logged.join('\n'));
    } finally {
      await store.close();
      await replica.stop();
    }
    const standalone = await open(undefined, { logger: { info: (line) => logged.push(line), warn() {} } });
    await standalone.close();
    assert.ok(logged.some((line) => line.includes('write concern server default')), logged.join('\n'));
  });

  it('keeps everything with retention 0, and a later retention applies to the same database', async () => {
    const databaseName = freshDatabase();
    const keepAll = await open(databaseName, { retentionDays: 0 });
    assert.equal((await keepAll.health()).ok, true);
    await keepAll.close();
    const store = await open(databaseName, { retentionDays: 7 });
    assert.equal((await store.health()).ok, true);
    await store.close();
  });

  it('sets up idempotently: a second store on the same database starts cleanly and sees the data', async () => {
    const databaseName = freshDatabase();
    await withStore(async (store) => {
      assert.ok((await store.write([batchOf('battery-data', [data(NOW)])]))[0]?.ok);
    }, databaseName);
    await withStore(async (store) => {
      assert.equal((await store.health()).ok, true);
      assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 1);
      assert.equal((await store.batteries())[0]?.counts['battery-data'], 1, 'the summary is built once, not again');
    }, databaseName);
  });

  it('reads newest first exactly on the time-series paths, also within one millisecond', async () => {
    // Several readings inside one millisecond of `time` and across the edges of it.
    const stamps = [0, 0.0001, 0.0004, 0.0009, 0.001, 0.0012, 0.5, 0.5004, 1, 1.0002].map((d) => NOW + d);
    const records = stamps.map((t, i) => data(t, i % 3 === 0 ? 'pack-2' : 'pack-1', 300 + i));
    const byNewest = [...records].sort((a, b) => b.timestamp! - a.timestamp!);
    for (const timeseriesPaths of [false, true]) {
      const store = await open(undefined, { timeseriesPaths });
      try {
        // Shuffled so that insertion order cannot stand in for timestamp order.
        const [outcome] = await store.write([batchOf('battery-data', [...records].reverse().sort((a, b) => ((a.pack_voltage as number) * 7) % 11 - ((b.pack_voltage as number) * 7) % 11))]);
        assert.ok(outcome?.ok);
        for (let limit = 1; limit <= records.length; limit++) {
          const got = await store.history('battery-data', { since: NOW, limit });
          assert.deepEqual(got.map((r) => r.timestamp), byNewest.slice(0, limit).map((r) => r.timestamp), `limit ${limit}`);
        }
        const pack2 = byNewest.filter((r) => r.battery_id === 'pack-2');
        assert.equal((await store.latest('battery-data', 'pack-2'))?.timestamp, pack2[0]!.timestamp);
        assert.deepEqual(
          (await store.history('battery-data', { since: NOW + 0.0001, limit: 2, batteryId: 'pack-2' })).map((r) => r.timestamp),
          pack2.filter((r) => r.timestamp! >= NOW + 0.0001).slice(0, 2).map((r) => r.timestamp),
        );
      } finally {
        await store.close();
      }
    }
  });

  it('fails a request with a bad record as a whole and spares the others in the same write', () =>
    withStore(async (store) => {
      const outcomes = await store.write([
        batchOf('battery-data', [data(NOW + 2)]),
        batchOf('battery-performance', [performance(NOW), { timestamp: NOW, battery_id: 'pack-1' }]),
        batchOf('battery-data', [data(NOW + 3, 'bad id with spaces')]),
      ]);
      assert.deepEqual(outcomes.map((o) => o.ok), [true, false, false]);
      assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 1);
      assert.equal(await store.latest('battery-performance'), null);
      assert.deepEqual((await store.batteries()).map((b) => b.counts['battery-performance']), [0]);
    }));

  it('lets only typed values reach a filter', () =>
    withStore(async (store) => {
      await store.write([batchOf('battery-data', [data(NOW, 'pack-1'), data(NOW + 1, 'pack-2')])]);
      const operator = { $ne: 'x' } as unknown as string;
      await assert.rejects(store.latest('battery-data', operator), TypeError);
      await assert.rejects(store.history('battery-data', { since: 0, limit: 10, batteryId: operator }), TypeError);
      await assert.rejects(store.history('battery-data', { since: { $gt: 0 } as unknown as number, limit: 10 }), TypeError);
      await assert.rejects(store.aggregate('battery-data', { from: 0, to: NOW, bucketSeconds: 60, batteryId: operator }), TypeError);
      await assert.rejects(async () => {
        for await (const _ of store.exportRange('battery-data', { from: 0, to: NOW + 10, batteryId: operator })) break;
      }, TypeError);
      // A string that merely looks like an operator is a battery id like any other, matching nothing.
      assert.equal(await store.latest('battery-data', '$ne'), null);
    }));

  it('keeps the password out of health() and errors, and starts while the server is away', async () => {
    const secret = 's3cret-Pa55word';
    const { port } = await import('node:net').then(
      ({ createServer }) =>
        new Promise<{ port: number }>((resolve) => {
          const probe = createServer().listen(0, '127.0.0.1', () => {
            const address = probe.address() as { port: number };
            probe.close(() => resolve(address));
          });
        }),
    );
    const logged: string[] = [];
    const started = Date.now();
    const store = await openMongoStore({
      uri: `mongodb://monitor:${secret}@127.0.0.1:${port}/?authSource=admin`,
      databaseName: freshDatabase(),
      retentionDays: 30,
      serverSelectionTimeoutMs: 500,
      logger: { info: (line) => logged.push(line), warn: (line) => logged.push(line) },
    });
    try {
      assert.ok(Date.now() - started < 5000, 'openMongoStore resolves while nothing listens');
      const health = await store.health();
      assert.equal(health.ok, false);
      assert.equal(health.store, 'mongodb');
      assert.match(health.error ?? '', /MongoDB store/);
      assert.ok(!health.error?.includes(secret));
      const error = await store.write([batchOf('battery-data', [data(NOW)])]).then(
        () => assert.fail('the write should fail'),
        (e: unknown) => e as Error,
      );
      assert.ok(error instanceof StoreUnavailableError);
      assert.ok(!error.message.includes(secret) && !String(error.stack).includes(secret));
      await assert.rejects(store.latest('battery-data'), StoreUnavailableError);
      assert.ok(logged.length > 0 && logged.every((line) => !line.includes(secret)), logged.join('\n'));
      assert.ok(logged.some((line) => line.includes('mongodb://***@127.0.0.1')), logged.join('\n'));
    } finally {
      await store.close();
    }
  });

  describe('faults', { skip: server.suspend === undefined && 'MONGODB_TEST_URI is a server these tests cannot stop' }, () => {
    const BOUND_MS = 10_000;

    async function eventually<T>(what: string, attempt: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          return await attempt();
        } catch (error) {
          if (Date.now() > deadline) throw new Error(`${what}: still failing after ${timeoutMs} ms: ${(error as Error).message}`);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
    }

    const writeOk = async (store: MongoStore, t: number) => {
      const [outcome] = await store.write([batchOf('battery-data', [data(t, 'pack-f', 380)])]);
      if (!outcome?.ok) throw outcome?.error ?? new Error('no outcome');
      return outcome.ids;
    };

    it('rejects writes within the bound while the server is down, and writes again once it is back, same store', async () => {
      const store = await open(freshDatabase(), { operationTimeoutMs: BOUND_MS });
      try {
        await writeOk(store, NOW);
        await server.suspend!();
        try {
          const started = Date.now();
          const error = await store.write([batchOf('battery-data', [data(NOW + 1, 'pack-f')])]).then(
            (outcomes) => (outcomes[0]?.ok ? assert.fail('the write should fail') : outcomes[0]!.error),
            (e: unknown) => e as Error,
          );
          const elapsed = Date.now() - started;
          assert.ok(error instanceof StoreUnavailableError, `${error.name}: ${error.message}`);
          assert.ok(elapsed < BOUND_MS + 1000, `rejected after ${elapsed} ms`);
          await assert.rejects(store.history('battery-data', { since: 0, limit: 10 }), StoreUnavailableError);
          const health = await store.health();
          assert.equal(health.ok, false);
          assert.match(health.error ?? '', /MongoDB store/);
        } finally {
          await server.resume!();
        }
        await eventually('write after the server came back', () => writeOk(store, NOW + 2));
        assert.deepEqual((await store.history('battery-data', { since: 0, limit: 10 })).map((r) => r.timestamp), [NOW + 2, NOW]);
        assert.equal((await store.health()).ok, true);
      } finally {
        await store.close();
      }
    });

    it('answers within the bound when the server hangs, and goes on once it answers again', async () => {
      const store = await open(freshDatabase(), { operationTimeoutMs: 1500 });
      try {
        await writeOk(store, NOW);
        server.freeze!();
        try {
          const started = Date.now();
          await assert.rejects(writeOk(store, NOW + 1), StoreUnavailableError);
          await assert.rejects(store.latest('battery-data'), StoreUnavailableError);
          assert.ok(Date.now() - started < 2 * 1500 + 1000, `took ${Date.now() - started} ms`);
          assert.equal((await store.health()).ok, false);
        } finally {
          server.thaw!();
        }
        await eventually('write after the server answers again', () => writeOk(store, NOW + 2));
        // The write that timed out may still land once the server wakes: a 503 means "not known to
        // be stored", which is why resending producers use idempotency keys.
        assert.ok((await store.history('battery-data', { since: 0, limit: 10 })).length >= 2);
      } finally {
        await store.close();
      }
    });

    it('writes a batch whose write timed out again without storing it twice: its records meet their own ids and count as stored', async () => {
      const store = await open(freshDatabase(), { operationTimeoutMs: 1500 });
      const packT = () => store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-t' });
      try {
        await writeOk(store, NOW);
        const batch = batchOf('battery-data', [data(NOW + 1, 'pack-t'), data(NOW + 2, 'pack-t')]);
        server.freeze!();
        try {
          const first = await store.write([batch]).then(
            (outcomes) => outcomes[0]!,
            (error: unknown) => ({ ok: false as const, error: error as Error }),
          );
          assert.equal(first.ok, false, 'no answer within the bound');
        } finally {
          server.thaw!();
        }
        // The write the store gave up on is done all the same once the server wakes.
        await eventually('the timed-out write lands', async () => assert.equal((await packT()).length, 2));
        // The ingest sink writes the same batch again.
        const [again] = await store.write([batch]);
        assert.ok(again?.ok, again?.ok === false ? again.error.message : '');
        assert.deepEqual(again.existing, [], 'stored by this write as far as anyone heard: handed on after commit');
        const stored = await packT();
        assert.equal(stored.length, 2, 'not stored twice');
        assert.deepEqual([...again.ids].sort(), stored.map((record) => record._id).sort());
      } finally {
        await store.close();
      }
    });

    it('starts while the server is down and sets itself up once it is back', async () => {
      await server.suspend!();
      let store: MongoStore | undefined;
      try {
        const started = Date.now();
        store = await open(freshDatabase(), { operationTimeoutMs: BOUND_MS, retryIntervalMs: 500 });
        assert.ok(Date.now() - started < BOUND_MS, 'openMongoStore resolves while the server is down');
        const health = await store.health();
        assert.equal(health.ok, false);
        assert.equal(health.mode, undefined);
        await assert.rejects(writeOk(store, NOW), StoreUnavailableError);
      } finally {
        await server.resume!();
      }
      try {
        await eventually('health after the server came back', async () => assert.equal((await store.health()).ok, true));
        await writeOk(store, NOW);
        assert.equal((await store.batteries())[0]?.counts['battery-data'], 1);
      } finally {
        await store.close();
      }
    });
  });
});
