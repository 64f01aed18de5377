/**
 * The MongoDB store's per-pack summary stays off the write path (mongodb-summary.ts): a write
 * answers before its counts are sent, counts are coalesced, and reads, retention and close see them.
 * On a real MongoDB-wire server; a proxy (test/support/mongo-proxy.ts) holds the summary updates
 * where a test needs the server to be slow at exactly those.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SUMMARY_COLLECTION } from '../../src/store/mongodb-setup.js';
import { openMongoStore, type MongoStoreOptions } from '../../src/store/mongodb-store.js';
import { SummaryQueue, type SummaryIncrement } from '../../src/store/mongodb-summary.js';
import { startMongoProxy, type ProxiedCommand } from '../support/mongo-proxy.js';
import { mongoForTests } from '../support/mongo-server.js';
import { eventually } from '../collector/helpers.js';
import { batchOf, data } from './conformance.js';

const NOW = 1_732_700_000;
const { server, freshDatabase, admin } = await mongoForTests('summary_test');
const isSummaryUpdate = (command: ProxiedCommand) => command.name === 'update' && command.collection === SUMMARY_COLLECTION;
const open = (options: Partial<MongoStoreOptions> = {}) =>
  openMongoStore({ uri: server.uri, databaseName: freshDatabase(), retentionDays: 30, ...options });
const countOf = async (store: { batteries(): Promise<{ battery_id: string; counts: Record<string, number> }[]> }, pack: string) =>
  (await store.batteries()).find((b) => b.battery_id === pack)?.counts['battery-data'];

// A store that waits for its summary update would wait here for the held update until its bound, write
// after write: the timeout makes such a regression fail in seconds rather than minutes.
describe(
  `MongoDB store: the pack summary off the write path, on ${server.description}`,
  { timeout: 30_000, skip: !/^mongodb:\/\/[^@/,]+:\d+/.test(server.uri) && 'the proxy needs a plain mongodb://host:port server' },
  () => {
    it('answers a write before its summary update goes to the server; batteries() waits for it', async () => {
      const proxy = await startMongoProxy(server.uri);
      const store = await openMongoStore({ uri: proxy.uri, databaseName: freshDatabase(), retentionDays: 30 });
      try {
        proxy.hold(isSummaryUpdate);
        // Before the change the write sent the update itself and waited for it: here it would be held
        // and the race below would go to the proxy.
        const first = await Promise.race([
          store.write([batchOf('battery-data', [data(NOW, 'pack-s'), data(NOW + 1, 'pack-s')])]),
          proxy.nextHeld().then(() => 'the summary update went out before the write answered'),
        ]);
        assert.ok(Array.isArray(first) && first[0]?.ok, String(first));
        // It goes afterwards, on its own.
        assert.equal((await proxy.nextHeld()).collection, SUMMARY_COLLECTION);
        let counted: number | undefined;
        const reading = countOf(store, 'pack-s').then((count) => (counted = count));
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(counted, undefined, 'batteries() waits for the counts this instance has not sent yet');
        proxy.release();
        await reading;
        assert.equal(counted, 2);
      } finally {
        proxy.release();
        await store.close();
        await proxy.close();
      }
    });

    it('coalesces the counts of many writes: one update in flight, the rest in the next one', async () => {
      const proxy = await startMongoProxy(server.uri);
      const store = await openMongoStore({ uri: proxy.uri, databaseName: freshDatabase(), retentionDays: 30 });
      try {
        proxy.hold(isSummaryUpdate);
        const before = proxy.commands.filter(isSummaryUpdate).length;
        assert.ok((await store.write([batchOf('battery-data', [data(NOW, 'pack-c')])]))[0]?.ok);
        await proxy.nextHeld();
        for (let i = 1; i < 20; i++) {
          const [outcome] = await store.write([batchOf('battery-data', [data(NOW + i, i % 2 === 0 ? 'pack-c' : 'pack-d')])]);
          assert.ok(outcome?.ok, 'writes answer while the summary update is held');
        }
        proxy.release();
        assert.equal(await countOf(store, 'pack-c'), 10);
        assert.equal(await countOf(store, 'pack-d'), 10);
        assert.equal(proxy.commands.filter(isSummaryUpdate).length - before, 2, '20 writes, 2 summary updates');
      } finally {
        proxy.release();
        await store.close();
        await proxy.close();
      }
    });

    it('logs a summary update the server does not answer within the bound; the write stands', async () => {
      const proxy = await startMongoProxy(server.uri);
      const logged: string[] = [];
      let warned: () => void = () => {};
      const warning = new Promise<void>((resolve) => (warned = resolve));
      const store = await openMongoStore({
        uri: proxy.uri,
        databaseName: freshDatabase(),
        retentionDays: 30,
        operationTimeoutMs: 1000,
        logger: { info() {}, warn: (line) => (logged.push(line), warned()) },
      });
      try {
        proxy.hold(isSummaryUpdate);
        assert.ok((await store.write([batchOf('battery-data', [data(NOW, 'pack-l')])]))[0]?.ok);
        await warning;
        assert.match(logged.join('\n'), /pack summary not updated, counts of 1 pack\/kind pairs are low by 1 records/);
        proxy.release();
        assert.equal((await store.history('battery-data', { since: 0, limit: 10, batteryId: 'pack-l' })).length, 1);
        assert.ok((await store.write([batchOf('battery-data', [data(NOW + 1, 'pack-l')])]))[0]?.ok);
      } finally {
        proxy.release();
        await store.close();
        await proxy.close();
      }
    });

    it('heals counts an outage left low: the packs whose summary update was lost are recounted from the records once the server is back', {
      skip: server.suspend === undefined && 'the test stops the server',
    }, async () => {
      const proxy = await startMongoProxy(server.uri);
      const logged: string[] = [];
      const store = await openMongoStore({
        uri: proxy.uri,
        databaseName: freshDatabase(),
        retentionDays: 30,
        serverSelectionTimeoutMs: 300,
        operationTimeoutMs: 1000,
        retryIntervalMs: 100,
        logger: { info: (line) => logged.push(line), warn: (line) => logged.push(line) },
      });
      try {
        assert.ok((await store.write([batchOf('battery-data', [data(NOW, 'pack-o')])]))[0]?.ok);
        assert.equal(await countOf(store, 'pack-o'), 1);
        proxy.hold(isSummaryUpdate);
        const [outcome] = await store.write([batchOf('battery-data', [data(NOW + 1, 'pack-o'), data(NOW + 2, 'pack-o'), data(NOW + 3, 'pack-p')])]);
        assert.ok(outcome?.ok, 'the records are stored');
        // The server stops between the insert and its summary update: the update dies with it.
        await proxy.nextHeld();
        await server.suspend!();
        proxy.release();
        await eventually(() => logged.some((line) => /pack summary not updated/.test(line)), 'the lost update logged');
        await server.resume!();
        await eventually(async () => (await countOf(store, 'pack-o')) === 3 && (await countOf(store, 'pack-p')) === 1, 'the counts healed');
        const pack = (await store.batteries()).find((b) => b.battery_id === 'pack-o');
        assert.equal(pack?.last_seen, NOW + 2);
        assert.ok(logged.some((line) => /recounted the battery_data records of 2 packs/.test(line)), logged.join('\n'));
      } finally {
        proxy.release();
        await server.resume?.();
        await store.close();
        await proxy.close();
      }
    });

    it('sends waiting counts before the retention delete counts down, so a deleted pack stays at zero', async () => {
      // Counts wait a minute unless something flushes them: only the retention delete does here.
      const store = await open({ summaryDelayMs: 60_000 });
      try {
        const old = [1, 2, 3].map((i) => data(NOW - 10 * 86_400 + i, 'pack-r'));
        assert.ok((await store.write([batchOf('battery-data', [...old, data(NOW, 'pack-r')])]))[0]?.ok);
        assert.equal(await store.deleteOlderThan(NOW - 86_400), 3);
        assert.equal(await countOf(store, 'pack-r'), 1);
      } finally {
        await store.close();
      }
    });

    it('sends waiting counts when it closes', async () => {
      const databaseName = freshDatabase();
      const first = await openMongoStore({ uri: server.uri, databaseName, retentionDays: 30, summaryDelayMs: 60_000 });
      assert.ok((await first.write([batchOf('battery-data', [data(NOW, 'pack-x'), data(NOW + 1, 'pack-x')])]))[0]?.ok);
      await first.close();
      const second = await openMongoStore({ uri: server.uri, databaseName, retentionDays: 30 });
      try {
        assert.equal(await countOf(second, 'pack-x'), 2);
      } finally {
        await second.close();
      }
    });
  },
);

describe('SummaryQueue', () => {
  const counts = (entries: [string, number, number][]) => new Map(entries.map(([pack, count, lastSeen]) => [pack, { count, lastSeen }]));

  function queue(options: { delayMs?: number; maxPending?: number } = {}) {
    const sent: SummaryIncrement[][] = [];
    const lost: SummaryIncrement[][] = [];
    let release: () => void = () => {};
    let fail = false;
    const q = new SummaryQueue({
      write: (increments) => {
        sent.push(increments.map((i) => ({ ...i })));
        if (fail) return Promise.reject(new Error('server away'));
        return new Promise<void>((resolve) => (release = resolve));
      },
      failed: (_, increments) => lost.push(increments),
      delayMs: options.delayMs ?? 60_000,
      maxPending: options.maxPending ?? 1000,
    });
    return { q, sent, lost, release: () => release(), failNext: () => (fail = true) };
  }

  it('merges increments per pack and kind, keeping the newest timestamp', async () => {
    const { q, sent, release } = queue();
    q.add('battery-data', counts([['a', 2, 10], ['b', 1, 5]]));
    q.add('battery-data', counts([['a', 3, 7]]));
    q.add('battery-prediction', counts([['a', 1, 1]]));
    assert.equal(sent.length, 0, 'nothing goes before the delay or a flush');
    const flushed = q.flush();
    release();
    await flushed;
    assert.deepEqual(sent, [
      [
        { batteryId: 'a', kind: 'battery-data', count: 5, lastSeen: 10 },
        { batteryId: 'b', kind: 'battery-data', count: 1, lastSeen: 5 },
        { batteryId: 'a', kind: 'battery-prediction', count: 1, lastSeen: 1 },
      ],
    ]);
  });

  it('sends at once past maxPending, and never two updates at a time', async () => {
    const { q, sent, release } = queue({ maxPending: 2 });
    q.add('battery-data', counts([['a', 1, 1]]));
    assert.equal(sent.length, 0);
    q.add('battery-data', counts([['b', 1, 1]]));
    assert.equal(sent.length, 1, 'two pending reach the bound');
    q.add('battery-data', counts([['c', 1, 1], ['d', 1, 1], ['e', 1, 1]]));
    assert.equal(sent.length, 1, 'waits for the update in flight');
    release();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(sent.length, 2);
    assert.deepEqual(sent[1]!.map((i) => i.batteryId), ['c', 'd', 'e']);
    release();
    await q.close();
  });

  it('reports what a failed update lost and goes on', async () => {
    const { q, lost, failNext } = queue();
    failNext();
    q.add('battery-data', counts([['a', 4, 1]]));
    await q.flush();
    assert.equal(lost.length, 1);
    assert.equal(lost[0]![0]!.count, 4);
    assert.equal(q.pending, 0);
  });
});
