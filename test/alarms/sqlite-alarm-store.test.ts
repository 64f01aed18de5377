import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ALARMS_FILE_NAME, openSqliteAlarmStore } from '../../src/alarms/sqlite-alarm-store.js';
import { SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';
import { alarmStoreConformance } from './alarm-store-conformance.js';

alarmStoreConformance('sqlite', async () => {
  const dir = tempDir();
  return { store: openSqliteAlarmStore(dir), reopen: async () => openSqliteAlarmStore(dir) };
});

describe('SQLite alarm store specifics', () => {
  it('is a file of its own beside the records, in WAL mode with full sync', async () => {
    const dir = tempDir();
    const store = openSqliteAlarmStore(path.join(dir, 'nested'));
    await store.close();
    const file = path.join(dir, 'nested', ALARMS_FILE_NAME);
    assert.ok(existsSync(file));
    assert.notEqual(ALARMS_FILE_NAME, SQLITE_FILE_NAME);
    const db = new Database(file, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]).join(',');
    assert.equal(tables, 'alarm_events,alarm_meta,alarm_outbox,alarm_packs,alarm_rules,alarm_webhooks,battery_alarms');
    db.close();
  });
});
