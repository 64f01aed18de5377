import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore, SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';
import { batchOf, data, storeConformance } from './conformance.js';

storeConformance('sqlite', { open: () => openSqliteStore(tempDir()), atomicRequests: true });

describe('SQLite store specifics', () => {
  it('creates the file in WAL mode with the indexes reads rely on', async () => {
    const dir = tempDir();
    const store = await openSqliteStore(path.join(dir, 'nested', 'data'));
    await store.close();
    const file = path.join(dir, 'nested', 'data', SQLITE_FILE_NAME);
    assert.ok(existsSync(file));
    const db = new Database(file, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    const plan = db.prepare("EXPLAIN QUERY PLAN SELECT * FROM battery_data WHERE battery_id = 'x' ORDER BY timestamp DESC LIMIT 1").all() as { detail: string }[];
    assert.match(plan.map((p) => p.detail).join(' '), /USING INDEX battery_data_battery_time/);
    db.close();
  });

  it('keeps what it acknowledged across a reopen', async () => {
    const dir = tempDir();
    const first = await openSqliteStore(dir);
    const [outcome] = await first.write([batchOf('battery-data', [data(1_732_700_000, 'pack-9', 377)])]);
    assert.ok(outcome?.ok);
    await first.close();
    const second = await openSqliteStore(dir);
    assert.equal((await second.latest('battery-data', 'pack-9'))?.pack_voltage, 377);
    await second.close();
  });
});
