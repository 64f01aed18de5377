import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ALARMS_FILE_NAME, openSqliteAlarmStore } from '../../src/alarms/sqlite-alarm-store.js';
import { SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';
import { alarm, alarmStoreConformance, changeSet, event, outboxOf, pack, rule, webhook } from './alarm-store-conformance.js';

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

  it('writes a change set of thousands of rows in parts with the event loop free between them, and all of it lands', async () => {
    const dir = tempDir();
    const store = openSqliteAlarmStore(dir);
    const hooks = Array.from({ length: 20 }, (_, i) => webhook(`w${i}`));
    for (const hook of hooks) await store.putWebhook(hook);
    // 300 packs with an alarm raised each: 300 alarms, 300 events, 6,000 notifications, 300 pack states.
    const raised = Array.from({ length: 300 }, (_, i) => alarm('r', `p${String(i).padStart(3, '0')}`, 1));
    const events = raised.map((a) => event(a, 1, 'raised'));
    const outbox = raised.flatMap((a, i) => outboxOf(a, events[i]!, hooks));
    const changes = changeSet({ rules: [{ put: rule('r') }], packs: raised.map((a) => pack(a.battery_id, [a])), alarms: raised, events, outbox, seeded: ['r'], writtenAt: 1_732_700_500 });
    let turns = 0;
    const counting = setInterval(() => turns++, 0);
    try {
      await store.apply(changes);
    } finally {
      clearInterval(counting);
    }
    // Timers ran while the write went on: it let the event loop go at least once between its parts.
    assert.ok(turns > 0, 'the event loop never ran during the write');
    const loaded = await store.load();
    assert.equal(loaded.packs.length, 300);
    assert.equal(loaded.outbox.length, 6000);
    assert.deepEqual(loaded.rules.map((r) => r.id), ['r']);
    assert.deepEqual(loaded.seeded, ['r']);
    assert.equal(loaded.writtenAt, 1_732_700_500);
    assert.equal((await store.alarms({ state: 'all', limit: 1000 })).length, 300);
    assert.equal((await store.alarm(raised[123]!.id))?.events.length, 1);
    await store.close();
  });
});
