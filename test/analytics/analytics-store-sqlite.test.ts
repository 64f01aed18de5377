import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ANALYTICS_FILE_NAME, openSqliteAnalyticsStore } from '../../src/analytics/sqlite-analytics-store.js';
import { SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';
import { analyticsStoreConformance } from './analytics-store-conformance.js';

analyticsStoreConformance('sqlite', async () => {
  const dir = tempDir();
  return { store: openSqliteAnalyticsStore(dir), reopen: async () => openSqliteAnalyticsStore(dir) };
});

describe('SQLite analytics store specifics', () => {
  it('is a file of its own beside the records, in WAL mode with full sync', async () => {
    const dir = tempDir();
    const store = openSqliteAnalyticsStore(path.join(dir, 'nested'));
    await store.close();
    const file = path.join(dir, 'nested', ANALYTICS_FILE_NAME);
    assert.ok(existsSync(file));
    assert.notEqual(ANALYTICS_FILE_NAME, SQLITE_FILE_NAME);
    const db = new Database(file, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
  });
});
