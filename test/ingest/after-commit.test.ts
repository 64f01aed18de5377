/**
 * The after-commit stage, through the ingest sink over a real SQLite store: what a subscriber gets
 * for each commit (per kind and pack, rows in timestamp order, their ids, the backfill count), in
 * commit order, each stored row once.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CommittedRows } from '../../src/ingest/after-commit.js';
import { StoreSink } from '../../src/ingest/store-sink.js';
import { batchOf, data, performance } from '../store/conformance.js';
import { instrumentedStore } from './helpers.js';

const T = 1_732_700_000;

/** What a subscriber saw of one pack in one commit, in plain values. */
function plain(rows: CommittedRows) {
  return {
    kind: rows.kind,
    batteryId: rows.batteryId,
    timestamps: Array.from({ length: rows.rows.length }, (_, i) => rows.rows.timestamp(i) - T),
    voltages: Array.from({ length: rows.rows.length }, (_, i) => rows.rows.value(i, 'pack_voltage')),
    backfill: rows.backfill,
  };
}

describe('after-commit stage', () => {
  it('hands each commit on per kind and pack, rows in timestamp order with their ids, and counts the backfill', async () => {
    const { store, hold } = await instrumentedStore();
    const sink = new StoreSink(store);
    const commits: CommittedRows[][] = [];
    sink.afterCommit.subscribe((commit) => commits.push([...commit]));
    try {
      // Three submissions in one commit, timestamps out of order within and across them.
      const release = hold();
      const first = Promise.all([
        sink.submit(batchOf('battery-data', [data(T + 5, 'pack-1', 5), data(T + 3, 'pack-1', 3)])),
        sink.submit(batchOf('battery-data', [data(T + 2, 'pack-2', 2)])),
        sink.submit(batchOf('battery-data', [data(T + 4, 'pack-1', 4), data(T + 1, 'pack-1', 1), data(T + 3, 'pack-1', 33)])),
        sink.submit(batchOf('battery-performance', [performance(T + 9, 'pack-1')])),
      ]);
      release();
      const ids = (await first).flat();
      assert.equal(commits.length, 1);
      assert.deepEqual(commits[0]!.map(plain), [
        // Equal timestamps keep the order they were submitted in.
        { kind: 'battery-data', batteryId: 'pack-1', timestamps: [1, 3, 3, 4, 5], voltages: [1, 3, 33, 4, 5], backfill: 0 },
        { kind: 'battery-data', batteryId: 'pack-2', timestamps: [2], voltages: [2], backfill: 0 },
        { kind: 'battery-performance', batteryId: 'pack-1', timestamps: [9], voltages: [396], backfill: 0 },
      ]);
      // Each row with the id the store gave it.
      for (const rows of commits[0]!) {
        for (let i = 0; i < rows.rows.length; i++) {
          const stored = (await store.history(rows.kind, { since: 0, limit: 100 })).find((record) => record._id === rows.ids[i]);
          assert.equal(stored?.timestamp, rows.rows.timestamp(i));
          assert.equal(stored?.battery_id, rows.batteryId);
        }
      }
      assert.equal(commits[0]!.reduce((n, rows) => n + rows.ids.length, 0), ids.length);

      // Later commits: a row older than what pack-1 had comes first and is counted as backfill.
      await sink.submit(batchOf('battery-data', [data(T + 6, 'pack-1', 6), data(T + 2, 'pack-1', 2)]));
      await sink.submit(batchOf('battery-data', [data(T + 5, 'pack-1', 55), data(T + 6, 'pack-1', 66), data(T + 1, 'pack-2', 1)]));
      assert.deepEqual(commits.slice(1).map((commit) => commit.map(plain)), [
        [{ kind: 'battery-data', batteryId: 'pack-1', timestamps: [2, 6], voltages: [2, 6], backfill: 1 }],
        [
          { kind: 'battery-data', batteryId: 'pack-1', timestamps: [5, 6], voltages: [55, 66], backfill: 1 },
          { kind: 'battery-data', batteryId: 'pack-2', timestamps: [1], voltages: [1], backfill: 1 },
        ],
      ]);
    } finally {
      await sink.close();
      await store.close();
    }
  });

  it('hands on commits in the order they were made', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store, { maxRecordsPerWrite: 10 });
    const seen: number[] = [];
    sink.afterCommit.subscribe((commit) => {
      for (const { rows, backfill } of commit) {
        assert.equal(backfill, 0);
        for (let i = 0; i < rows.length; i++) seen.push(rows.timestamp(i) - T);
      }
    });
    try {
      // Many writes (10 records each at most), two in flight at a time.
      await Promise.all(Array.from({ length: 100 }, (_, i) => sink.submit(batchOf('battery-data', [data(T + i, 'pack-1', i)]))));
      assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i));
    } finally {
      await sink.close();
      await store.close();
    }
  });

  it('hands on only what a write stored: a resent keyed record reaches subscribers once', async () => {
    const { store } = await instrumentedStore();
    const sink = new StoreSink(store);
    try {
      const heard: { kind: string; timestamps: number[]; ids: string[] }[] = [];
      sink.afterCommit.subscribe((commit) => {
        for (const rows of commit) heard.push({ kind: rows.kind, timestamps: plain(rows).timestamps, ids: [...rows.ids] });
      });
      const keyed = (t: number, key: string) => ({ ...data(T + t), key });
      const first = await sink.submit(batchOf('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1')]));
      const resent = await sink.submit(batchOf('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1')]));
      const grown = await sink.submit(batchOf('battery-data', [keyed(1, 'k:0'), keyed(2, 'k:1'), keyed(3, 'k:2')]));
      assert.deepEqual(resent, first);
      assert.deepEqual(grown.slice(0, 2), first);
      assert.deepEqual(heard, [
        { kind: 'battery-data', timestamps: [1, 2], ids: first },
        { kind: 'battery-data', timestamps: [3], ids: [grown[2]!] },
      ]);
    } finally {
      await sink.close();
      await store.close();
    }
  });

  it('logs a subscriber that throws; the other subscribers and the producer are not affected', async () => {
    const { store } = await instrumentedStore();
    const errors: string[] = [];
    const logger = { info() {}, warn() {}, error: (_: object, msg?: string) => errors.push(msg ?? '') };
    const sink = new StoreSink(store, { logger });
    let heard = 0;
    sink.afterCommit.subscribe(() => {
      throw new Error('a bug in a rule');
    });
    const unsubscribe = sink.afterCommit.subscribe((commit) => (heard += commit.length));
    try {
      assert.equal((await sink.submit(batchOf('battery-data', [data(T)]))).length, 1);
      assert.equal(heard, 1);
      assert.deepEqual(errors, ['an after-commit subscriber failed']);
      unsubscribe();
      await sink.submit(batchOf('battery-data', [data(T + 1)]));
      assert.equal(heard, 1, 'an unsubscribed subscriber hears nothing more');
    } finally {
      await sink.close();
      await store.close();
    }
  });
});
