/**
 * The ingest sink over real stores: group commit and answers on SQLite in a temp dir; back-pressure
 * with the store's writes held back (a gate in front of the real SQLite store's write); retrying
 * through a real outage of a MongoDB-wire server (stopped, then started again on the same data).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { LiveFeed } from '../../src/ingest/live-feed.js';
import { createCollectorMetrics, metricValue } from '../../src/collector/metrics.js';
import { RecordsRefusedError } from '../../src/ingest/record-sink.js';
import { IngestFullError, StoreSink } from '../../src/ingest/store-sink.js';
import type { StoredRecord } from '../../src/records/kinds.js';
import { openMongoStore } from '../../src/store/mongodb-store.js';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';
import { batchOf, data } from '../store/conformance.js';
import { instrumentedStore, refuseWhere } from './helpers.js';

const NOW = 1_732_700_000;
const one = (t: number, pack = 'pack-1', voltage = 400) => batchOf('battery-data', [data(t, pack, voltage)]);

describe('StoreSink', () => {
  it('groups concurrent submissions into few store writes, each answered with its own ids', async () => {
    const { store, writes } = await instrumentedStore();
    const sink = new StoreSink(store);
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => sink.submit(one(1_732_700_000 + i, `pack-${i % 3}`, i))));
    assert.ok(writes.length <= 3, `200 submissions took ${writes.length} writes`);
    assert.equal(new Set(answers.flat()).size, 200);
    const stored = await store.history('battery-data', { since: 0, limit: 1000 });
    for (const [i, [id]] of answers.entries()) assert.equal(stored.find((r) => r._id === id)?.pack_voltage, i);
    await sink.close();
    await store.close();
  });

  it('fails only the submission whose records the store refuses', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store);
    // A record without its fields gets past no validator; here it stands for a failing insert.
    const broken = batchOf('battery-data', [{ timestamp: 1_732_700_000, battery_id: 'pack-1' }]);
    const [good, bad] = await Promise.allSettled([sink.submit(one(1_732_700_001)), sink.submit(broken)]);
    assert.equal(good.status, 'fulfilled');
    assert.equal(bad.status, 'rejected');
    await sink.close();
    await store.close();
  });

  it("refuses only the records the store refuses in a device's batch; their neighbours and the other batches of the write are stored", async () => {
    const { store, file } = await instrumentedStore();
    refuseWhere(file, 'battery_data', "NEW.source = 'poison'");
    const metrics = createCollectorMetrics();
    const logs: { reason: unknown; msg: string | undefined }[] = [];
    const ignore = () => {};
    const logger = { info: ignore, error: ignore, warn: (obj: object, msg?: string) => logs.push({ reason: (obj as { reason?: unknown }).reason, msg }) };
    const sink = new StoreSink(store, { metrics, logger });
    const device = new AbortController();
    const rows = Array.from({ length: 10 }, (_, i) => data(NOW + i, 'pack-d', 400 + i, i === 3 || i === 7 ? { source: 'poison' } : {}));
    const [refused, neighbour, request] = await Promise.allSettled([
      sink.submit(batchOf('battery-data', rows), { retryUntil: device.signal, atomic: false }),
      sink.submit(one(NOW + 20, 'pack-o'), { retryUntil: device.signal, atomic: false }),
      sink.submit(one(NOW + 21, 'pack-h')),
    ]);
    assert.equal(refused.status, 'rejected');
    const error = (refused as PromiseRejectedResult).reason as unknown;
    assert.ok(error instanceof RecordsRefusedError, String(error));
    assert.deepEqual([error.rows, error.stored, error.reason], [[3, 7], 8, 'constraint']);
    assert.deepEqual([neighbour.status, request.status], ['fulfilled', 'fulfilled']);
    const stored = await store.history('battery-data', { since: 0, limit: 100, batteryId: 'pack-d' });
    assert.deepEqual(stored.map((r) => r.pack_voltage).sort(), [400, 401, 402, 404, 405, 406, 408, 409]);
    assert.equal(await metricValue(metrics.recordsRefused, { kind: 'battery-data', reason: 'constraint' }), 2);
    assert.equal(logs.filter((l) => l.reason === 'constraint').length, 1, 'logged once for the reason');
    assert.equal(sink.pendingRecords, 0);
    await sink.close();
    await store.close();
  });

  it('splits a batch in halves, each written alone, down to the record the store refused without saying which', async () => {
    const { store, file, writes } = await instrumentedStore();
    // The rollup upserts run after every row of a batch is in: a failure there names no row.
    refuseWhere(file, 'battery_data_rollup_60', "NEW.battery_id = 'pack-poison'");
    const metrics = createCollectorMetrics();
    const sink = new StoreSink(store, { metrics });
    const device = new AbortController();
    const rows = Array.from({ length: 8 }, (_, i) => data(NOW + i, i === 5 ? 'pack-poison' : 'pack-d', 400 + i));
    const [refused, request] = await Promise.allSettled([
      sink.submit(batchOf('battery-data', rows), { retryUntil: device.signal, atomic: false }),
      sink.submit(one(NOW + 20, 'pack-h')),
    ]);
    const error = (refused as PromiseRejectedResult).reason as unknown;
    assert.ok(error instanceof RecordsRefusedError, String(error));
    assert.deepEqual([error.rows, error.stored], [[5], 7]);
    assert.equal(request.status, 'fulfilled', 'the batch that shared the first write is stored');
    const stored = await store.history('battery-data', { since: 0, limit: 100, batteryId: 'pack-d' });
    assert.deepEqual(stored.map((r) => r.pack_voltage).sort(), [400, 401, 402, 403, 404, 406, 407]);
    // Shared write; alone; halves; quarters; the last two records.
    assert.ok(writes.slice(1).every((write) => write.length === 1), 'after the shared write, each part went alone');
    assert.equal(await metricValue(metrics.recordsRefused, { kind: 'battery-data', reason: 'constraint' }), 1);
    await sink.close();
    await store.close();
  });

  it("hands stored batches on in submission order: a device's later batch waits while an earlier one is written again", async () => {
    const { store, file } = await instrumentedStore();
    // A failure in the rollup names no row: the first batch goes again alone, in halves, after the
    // second was stored in the shared write. Subscribers must still see the pack's readings in order.
    refuseWhere(file, 'battery_data_rollup_60', "NEW.battery_id = 'pack-poison'");
    const sink = new StoreSink(store);
    const heard: { timestamps: number[]; backfill: number }[] = [];
    sink.afterCommit.subscribe((commit) => {
      for (const { batteryId, rows, backfill } of commit) {
        if (batteryId === 'pack-d') heard.push({ timestamps: Array.from({ length: rows.length }, (_, i) => rows.timestamp(i)), backfill });
      }
    });
    const device = new AbortController();
    const first = Array.from({ length: 8 }, (_, i) => data(NOW + i, i === 5 ? 'pack-poison' : 'pack-d', 400 + i));
    const [refused, later] = await Promise.allSettled([
      sink.submit(batchOf('battery-data', first), { retryUntil: device.signal, atomic: false }),
      sink.submit(batchOf('battery-data', [data(NOW + 20, 'pack-d'), data(NOW + 21, 'pack-d')]), { retryUntil: device.signal, atomic: false }),
    ]);
    assert.equal(refused.status, 'rejected');
    assert.equal(later.status, 'fulfilled');
    const timestamps = heard.flatMap((commit) => commit.timestamps);
    assert.deepEqual(timestamps, [0, 1, 2, 3, 4, 6, 7, 20, 21].map((t) => NOW + t), 'in the order the device sent them');
    assert.deepEqual(heard.map((commit) => commit.backfill), heard.map(() => 0), 'no reading taken as late');
    await sink.close();
    await store.close();
  });

  it('refuses an HTTP batch whole, naming the record the store refused; the batch that shared its write is stored', async () => {
    const { store, file } = await instrumentedStore();
    refuseWhere(file, 'battery_data', "NEW.source = 'poison'");
    const metrics = createCollectorMetrics();
    const sink = new StoreSink(store, { metrics });
    const [refused, neighbour] = await Promise.allSettled([
      sink.submit(batchOf('battery-data', [data(NOW, 'pack-a'), data(NOW + 1, 'pack-a', 400, { source: 'poison' }), data(NOW + 2, 'pack-a')])),
      sink.submit(one(NOW + 3, 'pack-b')),
    ]);
    const error = (refused as PromiseRejectedResult).reason as unknown;
    assert.ok(error instanceof RecordsRefusedError, String(error));
    assert.deepEqual([error.rows, error.stored, error.reason], [[1], 0, 'constraint']);
    assert.equal(neighbour.status, 'fulfilled');
    assert.deepEqual(await store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-a' }), [], 'all or nothing');
    assert.equal(await metricValue(metrics.recordsRefused, { kind: 'battery-data', reason: 'constraint' }), 1);
    await sink.close();
    await store.close();
  });

  it('writes what is queued before close resolves, then refuses more', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store);
    const pending = Array.from({ length: 50 }, (_, i) => sink.submit(one(1_732_700_000 + i)));
    await sink.close();
    assert.equal((await Promise.all(pending)).length, 50);
    await assert.rejects(sink.submit(one(1)), /closed/);
    assert.equal((await store.history('battery-data', { since: 0, limit: 100 })).length, 50);
    await store.close();
  });

  it('is full past its bound: refuses batches that can be retried later, takes the others, and says when it drained', { timeout: 60_000 }, async () => {
    const { store, hold } = await instrumentedStore();
    const sink = new StoreSink(store, { maxPendingRecords: 100 });
    const release = hold();
    const rows = (from: number, count: number) => batchOf('battery-data', Array.from({ length: count }, (_, i) => data(1_732_700_000 + from + i)));
    const device = new AbortController();
    const first = sink.submit(rows(0, 60));
    assert.equal(sink.full, false);
    const second = sink.submit(rows(60, 60), { retryUntil: device.signal });
    assert.equal(sink.full, true);
    assert.equal(sink.pendingRecords, 120);
    // An HTTP batch is refused at once, with when to come back; a device's batch is still taken.
    await assert.rejects(sink.submit(rows(200, 1)), (error: unknown) => error instanceof IngestFullError && error.retryAfterSeconds >= 1);
    const third = sink.submit(rows(120, 10), { retryUntil: device.signal });
    const drained = once(sink, 'drained');
    release();
    await Promise.all([first, second, third, drained]);
    assert.equal(sink.full, false);
    assert.equal((await sink.submit(rows(300, 1))).length, 1);
    assert.equal((await store.history('battery-data', { since: 0, limit: 1000 })).length, 131);
    await sink.close();
    await store.close();
  });

  it('publishes each stored record once to live subscribers, filtered by pack and kind', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store);
    const feed = new LiveFeed(sink.afterCommit);
    const received: Record<string, string> = { all: '', pack2: '', perf: '' };
    // Text or buffers, whichever the live feed hands over.
    const textOf = (events: string | readonly Buffer[]) => (typeof events === 'string' ? events : events.join(''));
    const subscriber = (name: string, filter: object) => ({ ...filter, write: (events: string | readonly Buffer[]) => ((received[name] += textOf(events)), 0), drop() {} });
    feed.subscribe(subscriber('all', {}));
    feed.subscribe(subscriber('pack2', { batteryId: 'pack-2' }));
    feed.subscribe(subscriber('perf', { kind: 'battery-performance' }));
    await Promise.all([sink.submit(batchOf('battery-data', [data(1, 'pack-1'), data(2, 'pack-2')])), sink.submit(one(3, 'pack-2'))]);
    const events = (text: string) => text.split('\n\n').filter(Boolean).map((event) => JSON.parse(event.split('data: ')[1]!) as StoredRecord);
    assert.deepEqual(events(received.all!).map((r) => r.timestamp).sort(), [1, 2, 3]);
    assert.deepEqual(events(received.pack2!).map((r) => r.timestamp), [2, 3]);
    assert.equal(received.perf, '');
    feed.close();
    await sink.close();
    await store.close();
  });

  it('drops a subscriber that falls too far behind', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store);
    const feed = new LiveFeed(sink.afterCommit);
    let dropped = false;
    feed.subscribe({ write: () => 10 * 1024 * 1024, drop: () => (dropped = true) });
    await sink.submit(one(1));
    assert.equal(dropped, true);
    assert.equal(feed.size, 0);
    assert.equal(feed.dropped, 1);
    feed.close();
    await sink.close();
    await store.close();
  });
});

describe('StoreSink through a store outage', { skip: process.env.MONGODB_TEST_URI ? 'an external server cannot be stopped by the test' : false }, () => {
  let server: MongoTestServer;
  after(() => server?.stop());

  it("holds a device's batches and stores them, in order, once the store is back; HTTP batches fail meanwhile", async () => {
    server = await startMongoServer();
    const store = await openMongoStore({
      uri: server.uri,
      databaseName: `sink_outage_${process.pid}`,
      retentionDays: 0,
      serverSelectionTimeoutMs: 300,
      operationTimeoutMs: 1000,
    });
    const logs: string[] = [];
    const log = (_: object, msg?: string) => logs.push(msg ?? '');
    const logger = { info: log, warn: log, error: log };
    const sink = new StoreSink(store, { logger, retryMinMs: 50, retryMaxMs: 200 });
    const heard: number[] = [];
    sink.afterCommit.subscribe((commit) => {
      for (const { rows } of commit) for (let i = 0; i < rows.length; i++) heard.push(rows.timestamp(i));
    });
    const device = new AbortController();
    try {
      await sink.submit(one(1_732_700_000), { retryUntil: device.signal });
      await server.suspend!();
      const held = [1, 2, 3].map((i) => sink.submit(one(1_732_700_000 + i), { retryUntil: device.signal }));
      // Each attempt fails only after the store's own bound: wait for the first to be held.
      while (!sink.full) await new Promise((resolve) => setTimeout(resolve, 20));
      await assert.rejects(sink.submit(one(1_732_700_010)), IngestFullError);
      const drained = once(sink, 'drained');
      await server.resume!();
      await Promise.all([...held, drained]);
      assert.equal(sink.full, false);
      const stored = await store.history('battery-data', { since: 0, limit: 10 });
      assert.deepEqual(stored.map((r) => r.timestamp).reverse(), [0, 1, 2, 3].map((i) => 1_732_700_000 + i));
      assert.deepEqual(heard, [0, 1, 2, 3].map((i) => 1_732_700_000 + i), 'subscribers saw each once, in order');
      assert.ok(logs.includes('the store did not take the records; reading is paused and they are retried'));
      assert.ok(logs.includes('the store takes records again; reading resumes'));
    } finally {
      await sink.close();
      await store.close();
    }
  });

  it('gives held batches one last attempt when their producer closes, and fails them if the store is still away', async () => {
    server ??= await startMongoServer();
    const store = await openMongoStore({ uri: server.uri, databaseName: `sink_close_${process.pid}`, retentionDays: 0, serverSelectionTimeoutMs: 300, operationTimeoutMs: 1000 });
    const sink = new StoreSink(store, { retryMinMs: 60_000, retryMaxMs: 60_000 });
    const device = new AbortController();
    try {
      await sink.submit(one(1_732_700_000), { retryUntil: device.signal });
      await server.suspend!();
      const held = sink.submit(one(1_732_700_001), { retryUntil: device.signal });
      while (!sink.full) await new Promise((resolve) => setTimeout(resolve, 20));
      // Without the abort the next attempt would be a minute away.
      device.abort();
      await assert.rejects(held, /unavailable|closed|answer/i);
      assert.equal(sink.pendingRecords, 0);
    } finally {
      await sink.close();
      await store.close();
      await server.resume!();
    }
  });
});
