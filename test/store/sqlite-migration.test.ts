/**
 * A records file of an older layout opens, is brought up to date and keeps its rows: the file the
 * service wrote before per-cell readings (fixtures/sqlite-v0.sql) gains the array and derived columns
 * and its rollups the derived figures, its records read as they did, and new records with cells are
 * stored beside them, into the same rollup buckets. A file of a newer layout is refused.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { SCHEMA_VERSION } from '../../src/store/sqlite-schema.js';
import { openSqliteStore, SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';
import { batchOf, RECEIVED_AT } from './conformance.js';

const HOUR = 1_732_698_000;
const ORIGINAL_FIELDS = ['_id', 'timestamp', 'received_at', 'source', 'battery_id', 'pack_voltage', 'pack_current', 'cell_temp'];

/** A data directory holding the version 0 file. */
function oldDataDir(): string {
  const dir = tempDir('sqlite-v0-');
  const db = new Database(path.join(dir, SQLITE_FILE_NAME));
  db.exec(readFileSync(new URL('./fixtures/sqlite-v0.sql', import.meta.url), 'utf8'));
  assert.equal(db.pragma('user_version', { simple: true }), 0);
  db.close();
  return dir;
}

test('a file written before per-cell readings opens, keeps its rows and rollups, and takes records with cells', async () => {
  const dir = oldDataDir();
  const store = await openSqliteStore(dir);
  try {
    const old1 = await store.history('battery-data', { since: 0, limit: 100, batteryId: 'old-1' });
    assert.equal(old1.length, 8);
    for (const record of old1) assert.deepEqual(Object.keys(record), ORIGINAL_FIELDS);
    assert.deepEqual(await store.latest('battery-data', 'old-2'), {
      _id: '10',
      timestamp: 1732703400,
      received_at: 1732703400.25,
      source: 'battery_monitor',
      battery_id: 'old-2',
      pack_voltage: 399,
      pack_current: -19,
      cell_temp: 29.5,
    });
    assert.equal((await store.history('battery-data', { since: 0, limit: 100, batteryId: 'old-2' })).at(-1)?.device_time, 1234.5);
    assert.equal((await store.latest('battery-performance', 'old-1', 'predictor'))?.health_score, 92.3);
    assert.deepEqual((await store.batteries()).map((b) => [b.battery_id, b.counts['battery-data']]), [['old-1', 8], ['old-2', 4]]);

    // The hour rollups as they were: no derived figures in them.
    const hours = { from: HOUR, to: HOUR + 7200, bucketSeconds: 3600, batteryId: 'old-1' };
    const before = await store.aggregate('battery-data', hours);
    assert.deepEqual(before.map((b) => [b.start, b.count, b.min.pack_voltage, b.max.pack_voltage, b.mean.pack_voltage]), [
      [HOUR, 4, 391, 395, 393],
      [HOUR + 3600, 4, 397, 401, 399],
    ]);
    assert.deepEqual(before.map((b) => Object.keys(b.mean)), [['pack_voltage', 'pack_current', 'cell_temp'], ['pack_voltage', 'pack_current', 'cell_temp']]);

    // A record with cells into an hour bucket the old file holds: the bucket gains the derived figures.
    const [outcome] = await store.write([
      batchOf('battery-data', [{ timestamp: HOUR + 1800.5, battery_id: 'old-1', pack_voltage: 392.5, pack_current: -1, cell_temp: 26, cell_voltages: [3.61, 3.66, 3.6] }]),
    ]);
    assert.ok(outcome?.ok);
    const [first, second] = await store.aggregate('battery-data', hours);
    assert.deepEqual([first!.count, first!.mean.pack_voltage], [5, (1572 + 392.5) / 5]);
    assert.deepEqual([first!.min.cell_voltage_delta, first!.max.cell_voltage_delta, first!.mean.cell_voltage_delta], [3.66 - 3.6, 3.66 - 3.6, 3.66 - 3.6]);
    assert.equal(first!.min.cell_voltage_min, 3.6);
    assert.equal('cell_temp_max' in first!.mean, false, 'no record of the bucket had cell temperatures');
    assert.equal('cell_voltage_delta' in second!.mean, false);
    const added = (await store.history('battery-data', { since: 0, limit: 100, batteryId: 'old-1' })).find((r) => r.timestamp === HOUR + 1800.5)!;
    assert.equal(added.received_at, RECEIVED_AT);
    assert.deepEqual(added.cell_voltages, [3.61, 3.66, 3.6]);
  } finally {
    await store.close();
  }

  const db = new Database(path.join(dir, SQLITE_FILE_NAME), { readonly: true });
  try {
    assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    const columns = (table: string) => (db.pragma(`table_info(${table})`) as { name: string; type: string; notnull: number }[]).map((c) => `${c.name} ${c.type}${c.notnull ? ' NOT NULL' : ''}`);
    assert.deepEqual(columns('battery_data').slice(-6), [
      'cell_voltages TEXT',
      'cell_temps TEXT',
      'cell_voltage_min REAL',
      'cell_voltage_max REAL',
      'cell_voltage_delta REAL',
      'cell_temp_max REAL',
    ]);
    assert.ok(columns('battery_data_rollup_60').includes('n_cell_voltage_delta INTEGER NOT NULL'));
    assert.equal(db.prepare('SELECT count(*) FROM battery_data').pluck().get(), 13);
  } finally {
    db.close();
  }

  // Opening again changes nothing.
  const again = await openSqliteStore(dir);
  assert.equal((await again.history('battery-data', { since: 0, limit: 100 })).length, 13);
  await again.close();
});

test('a file of a newer layout than this program knows is refused, naming both versions', async () => {
  const dir = oldDataDir();
  const db = new Database(path.join(dir, SQLITE_FILE_NAME));
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  await assert.rejects(openSqliteStore(dir), new RegExp(`version ${SCHEMA_VERSION + 1}, newer than this program's \\(${SCHEMA_VERSION}\\)`));
});
