import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchWriter } from '../../src/ingest/batch-writer.js';
import { LiveFeed } from '../../src/ingest/live-feed.js';
import type { StoredRecord } from '../../src/records/kinds.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import type { Store, WriteRequest } from '../../src/store/store.js';
import { data } from '../store/conformance.js';
import { tempDir } from '../support/temp-dir.js';

/** The real SQLite store, with its write calls counted. */
async function countingStore(): Promise<{ store: Store; writes: WriteRequest[][] }> {
  const store = await openSqliteStore(tempDir());
  const writes: WriteRequest[][] = [];
  const write = store.write.bind(store);
  store.write = (requests) => {
    writes.push(requests);
    return write(requests);
  };
  return { store, writes };
}

describe('BatchWriter', () => {
  it('groups concurrent submissions into few store writes, each answered with its own ids', async () => {
    const { store, writes } = await countingStore();
    const writer = new BatchWriter(store);
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => writer.submit('battery-data', [data(1_732_700_000 + i, `pack-${i % 3}`, i)])));
    assert.ok(writes.length <= 3, `200 submissions took ${writes.length} writes`);
    assert.equal(new Set(answers.flat()).size, 200);
    const stored = await store.history('battery-data', { since: 0, limit: 1000 });
    for (const [i, [id]] of answers.entries()) assert.equal(stored.find((r) => r._id === id)?.pack_voltage, i);
    await writer.close();
    await store.close();
  });

  it('fails only the submission whose records the store refuses', async () => {
    const { store } = await countingStore();
    const writer = new BatchWriter(store);
    const broken = { ...data(1_732_700_000), values: {} };
    const [good, bad] = await Promise.allSettled([writer.submit('battery-data', [data(1_732_700_001)]), writer.submit('battery-data', [broken])]);
    assert.equal(good.status, 'fulfilled');
    assert.equal(bad.status, 'rejected');
    await writer.close();
    await store.close();
  });

  it('writes what is queued before close resolves, then refuses more', async () => {
    const { store } = await countingStore();
    const writer = new BatchWriter(store);
    const pending = Array.from({ length: 50 }, (_, i) => writer.submit('battery-data', [data(1_732_700_000 + i)]));
    await writer.close();
    assert.equal((await Promise.all(pending)).length, 50);
    await assert.rejects(writer.submit('battery-data', [data(1)]), /closed/);
    assert.equal((await store.history('battery-data', { since: 0, limit: 100 })).length, 50);
    await store.close();
  });

  it('publishes each stored record once to live subscribers, filtered by pack and kind', async () => {
    const { store } = await countingStore();
    const writer = new BatchWriter(store);
    const feed = new LiveFeed(writer);
    const received: Record<string, string> = { all: '', pack2: '', perf: '' };
    const subscriber = (name: string, filter: object) => ({ ...filter, write: (text: string) => ((received[name] += text), 0), drop() {} });
    feed.subscribe(subscriber('all', {}));
    feed.subscribe(subscriber('pack2', { batteryId: 'pack-2' }));
    feed.subscribe(subscriber('perf', { kind: 'battery-performance' }));
    await Promise.all([writer.submit('battery-data', [data(1, 'pack-1'), data(2, 'pack-2')]), writer.submit('battery-data', [data(3, 'pack-2')])]);
    const events = (text: string) => text.split('\n\n').filter(Boolean).map((event) => JSON.parse(event.split('data: ')[1]!) as StoredRecord);
    assert.deepEqual(events(received.all!).map((r) => r.timestamp).sort(), [1, 2, 3]);
    assert.deepEqual(events(received.pack2!).map((r) => r.timestamp).sort(), [2, 3]);
    assert.equal(received.perf, '');
    feed.close();
    await writer.close();
    await store.close();
  });

  it('hands listeners only what a write stored: a resent keyed record reaches them once', async () => {
    const { store } = await countingStore();
    const writer = new BatchWriter(store);
    try {
      const heard: { kind: string; timestamps: number[]; ids: string[] }[] = [];
      writer.onStored((kind, records, ids) => heard.push({ kind, timestamps: records.map((r) => r.timestamp), ids: [...ids] }));
      const keyed = (t: number, key: string) => ({ ...data(t), key });
      const first = await writer.submit('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1')]);
      const resent = await writer.submit('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1')]);
      const grown = await writer.submit('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1'), keyed(3, 'k:2')]);
      assert.deepEqual(resent, first);
      assert.deepEqual(grown.slice(0, 2), first);
      assert.deepEqual(heard, [
        { kind: 'battery-data', timestamps: [1, 2], ids: first },
        { kind: 'battery-data', timestamps: [3], ids: [grown[2]!] },
      ]);
    } finally {
      await writer.close();
      await store.close();
    }
  });

  it('drops a subscriber that falls too far behind', async () => {
    const { store } = await countingStore();
    const writer = new BatchWriter(store);
    const feed = new LiveFeed(writer);
    let dropped = false;
    feed.subscribe({ write: () => 10 * 1024 * 1024, drop: () => (dropped = true) });
    await writer.submit('battery-data', [data(1)]);
    assert.equal(dropped, true);
    assert.equal(feed.size, 0);
    assert.equal(feed.dropped, 1);
    feed.close();
    await writer.close();
    await store.close();
  });
});
