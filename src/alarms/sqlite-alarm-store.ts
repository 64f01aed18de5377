/**
 * The alarm store of the embedded setup: DATA_DIR/alarms.sqlite, a file of its own (docs/alarms.md
 * says why), on the side stores' thread (store/sqlite-thread.ts): its commits sync to disk off the event
 * loop. Not the records' file: alarm writes through the records' writer thread would queue behind
 * record batches. This file has no other writer, so a transaction never waits for a lock; the engine
 * writes at most one change set at a time, coalesced.
 *
 * Rules, alarms, events and pack states are kept as JSON, beside the columns their queries filter
 * and sort by.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { openSideFile, SqliteSideStore } from '../store/sqlite-thread.js';
import type { AlarmQuery, AlarmStore, AlarmWithEvents, ChangeSet, LoadedState } from './alarm-store.js';
import type { Alarm, AlarmEvent, AlarmRule, PackState } from './model.js';
import type { Notification, Webhook } from './notifications.js';

export const ALARMS_FILE_NAME = 'alarms.sqlite';
const SCHEMA_VERSION = 2;
/** Cleared alarms removed per statement by retention, so that no delete holds the thread for long. */
const DELETE_CHUNK = 1000;
/**
 * Rows a change set writes per transaction, about. A larger one (a fleet-wide event: a fuzzing run
 * wrote 2,433 alarm changes with 46,227 notifications in one change set, 5.5 s with the event loop
 * stopped) is written in parts, alarm by alarm, each copied to the thread on its own (a copy of
 * 13,000 notifications held the event loop 0.2 s), with other calls answered between them.
 */
const ROWS_PER_TRANSACTION = 1000;

export function openSqliteAlarmStore(dataDir: string): SqliteAlarmStore {
  mkdirSync(dataDir, { recursive: true });
  return new SqliteAlarmStore(path.join(dataDir, ALARMS_FILE_NAME));
}

/** The store as the service sees it: each call answered by the file's thread. */
export class SqliteAlarmStore extends SqliteSideStore<SqliteAlarmFile> implements AlarmStore {
  constructor(file: string) {
    super({ openCore }, import.meta.url, file, 'alarm store');
  }

  loadRules = () => this.thread.call('loadRules');
  loadWebhooks = () => this.thread.call('loadWebhooks');
  loadPack = (batteryId: string) => this.thread.call('loadPack', batteryId);
  load = () => this.thread.call('load');
  /** In parts, each its own call: neither the copy to the thread nor a commit is ever large. */
  apply = async (changes: ChangeSet) => {
    const parts = partsOf(changes, ROWS_PER_TRANSACTION);
    for (const [index, part] of parts.entries()) await this.thread.call('applyPart', part, index === parts.length - 1);
  };
  alarms = (query: AlarmQuery) => this.thread.call('alarms', query);
  alarm = (id: string) => this.thread.call('alarm', id);
  deleteClosedBefore = (cutoff: number) => this.thread.call('deleteClosedBefore', cutoff);
  putWebhook = (webhook: Webhook) => this.thread.call('putWebhook', webhook);
  deleteWebhook = (id: string) => this.thread.call('deleteWebhook', id);
  updateNotification = (notification: Notification) => this.thread.call('updateNotification', notification);
  deliveries = (webhookId: string, limit: number) => this.thread.call('deliveries', webhookId, limit);
}

/** The core the thread runs (sqlite-thread-host.ts). */
export const openCore = (file: string) => new SqliteAlarmFile(file);

function createSchema(db: Database.Database): void {
  db.exec(`
CREATE TABLE IF NOT EXISTS alarm_rules (id TEXT PRIMARY KEY, created_at REAL NOT NULL, rule TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS battery_alarms (
  id TEXT PRIMARY KEY,
  rule_id TEXT NOT NULL,
  battery_id TEXT NOT NULL,
  state TEXT NOT NULL,
  severity TEXT NOT NULL,
  raised_at REAL NOT NULL,
  cleared_at REAL,
  alarm TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS battery_alarms_raised ON battery_alarms (raised_at, id);
CREATE INDEX IF NOT EXISTS battery_alarms_pack ON battery_alarms (battery_id, raised_at);
CREATE INDEX IF NOT EXISTS battery_alarms_open ON battery_alarms (state) WHERE state != 'cleared';
CREATE INDEX IF NOT EXISTS battery_alarms_cleared ON battery_alarms (cleared_at) WHERE cleared_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS alarm_events (id TEXT PRIMARY KEY, alarm_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarm_events_alarm ON alarm_events (alarm_id, seq);
CREATE TABLE IF NOT EXISTS alarm_packs (battery_id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_webhooks (id TEXT PRIMARY KEY, created_at REAL NOT NULL, webhook TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarm_outbox (
  id TEXT PRIMARY KEY,
  webhook_id TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at REAL NOT NULL,
  seq INTEGER NOT NULL,
  notification TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_outbox_pending ON alarm_outbox (created_at, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alarm_outbox_webhook ON alarm_outbox (webhook_id, created_at);
`);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
}

/** The file itself, on its thread: statements and transactions. */
class SqliteAlarmFile {
  readonly #db: Database.Database;
  readonly #apply: (changes: ChangeSet, last: boolean) => void;
  readonly #statements;
  /** Alarm queries by their SQL: a handful of filter combinations, each prepared once. */
  readonly #queries = new Map<string, Database.Statement>();

  constructor(file: string) {
    const db = openSideFile(file);
    createSchema(db);
    this.#db = db;
    const s = {
      putRule: db.prepare('INSERT OR REPLACE INTO alarm_rules (id, created_at, rule) VALUES (?, ?, ?)'),
      deleteRule: db.prepare('DELETE FROM alarm_rules WHERE id = ?'),
      rules: db.prepare('SELECT rule FROM alarm_rules ORDER BY created_at, id').pluck(),
      putPack: db.prepare('INSERT OR REPLACE INTO alarm_packs (battery_id, state) VALUES (?, ?)'),
      packs: db.prepare('SELECT state FROM alarm_packs').pluck(),
      pack: db.prepare('SELECT state FROM alarm_packs WHERE battery_id = ?').pluck(),
      putAlarm: db.prepare(
        'INSERT OR REPLACE INTO battery_alarms (id, rule_id, battery_id, state, severity, raised_at, cleared_at, alarm) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      alarm: db.prepare('SELECT alarm FROM battery_alarms WHERE id = ?').pluck(),
      putEvent: db.prepare('INSERT OR IGNORE INTO alarm_events (id, alarm_id, seq, event) VALUES (?, ?, ?, ?)'),
      events: db.prepare('SELECT event FROM alarm_events WHERE alarm_id = ? ORDER BY seq').pluck(),
      putMeta: db.prepare('INSERT OR REPLACE INTO alarm_meta (key, value) VALUES (?, ?)'),
      meta: db.prepare('SELECT value FROM alarm_meta WHERE key = ?').pluck(),
      closedBefore: db.prepare(`SELECT id FROM battery_alarms WHERE cleared_at < ? AND state = 'cleared' LIMIT ${DELETE_CHUNK}`).pluck(),
      deleteEvents: db.prepare('DELETE FROM alarm_events WHERE alarm_id = ?'),
      deleteAlarm: db.prepare("DELETE FROM battery_alarms WHERE id = ? AND state = 'cleared'"),
      putWebhook: db.prepare('INSERT OR REPLACE INTO alarm_webhooks (id, created_at, webhook) VALUES (?, ?, ?)'),
      deleteWebhook: db.prepare('DELETE FROM alarm_webhooks WHERE id = ?'),
      webhooks: db.prepare('SELECT webhook FROM alarm_webhooks ORDER BY created_at, id').pluck(),
      putNotification: db.prepare('INSERT OR IGNORE INTO alarm_outbox (id, webhook_id, state, created_at, seq, notification) VALUES (?, ?, ?, ?, ?, ?)'),
      updateNotification: db.prepare('UPDATE alarm_outbox SET state = ?, notification = ? WHERE id = ?'),
      pending: db.prepare("SELECT notification FROM alarm_outbox WHERE state = 'pending' ORDER BY created_at, seq").pluck(),
      deliveries: db.prepare('SELECT notification FROM alarm_outbox WHERE webhook_id = ? ORDER BY created_at DESC, seq DESC LIMIT ?').pluck(),
      deleteNotificationsOf: db.prepare('DELETE FROM alarm_outbox WHERE webhook_id = ?'),
      deleteFinishedBefore: db.prepare("DELETE FROM alarm_outbox WHERE created_at < ? AND state != 'pending'"),
    };
    this.#statements = s;
    this.#apply = db.transaction((changes: ChangeSet, last: boolean) => {
      for (const change of changes.rules) {
        if ('put' in change) s.putRule.run(change.put.id, change.put.created_at, JSON.stringify(change.put));
        else s.deleteRule.run(change.delete);
      }
      for (const event of changes.events) s.putEvent.run(event.id, event.alarm_id, event.seq, JSON.stringify(event));
      for (const alarm of changes.alarms) {
        s.putAlarm.run(alarm.id, alarm.rule_id, alarm.battery_id, alarm.state, alarm.severity, alarm.raised_at, alarm.cleared_at, JSON.stringify(alarm));
      }
      for (const pack of changes.packs) s.putPack.run(pack.battery_id, JSON.stringify(pack));
      for (const row of changes.outbox ?? []) s.putNotification.run(row.id, row.webhook_id, row.state, row.created_at, row.seq, JSON.stringify(row));
      if (changes.seeded !== undefined) s.putMeta.run('seeded', JSON.stringify(changes.seeded));
      // Where a restart looks back from for packs with no stored state: moved once every part is in.
      if (last) s.putMeta.run('written_at', JSON.stringify(changes.writtenAt));
    });
  }

  loadRules(): AlarmRule[] {
    return (this.#statements.rules.all() as string[]).map((text) => JSON.parse(text) as AlarmRule);
  }

  loadWebhooks(): Webhook[] {
    return (this.#statements.webhooks.all() as string[]).map((text) => JSON.parse(text) as Webhook);
  }

  loadPack(batteryId: string): PackState | undefined {
    const text = this.#statements.pack.get(batteryId) as string | undefined;
    return text === undefined ? undefined : (JSON.parse(text) as PackState);
  }

  load(): LoadedState {
    const s = this.#statements;
    const meta = (key: string) => {
      const value = s.meta.get(key) as string | undefined;
      return value === undefined ? undefined : (JSON.parse(value) as unknown);
    };
    const writtenAt = meta('written_at') as number | undefined;
    return {
      rules: (s.rules.all() as string[]).map((text) => JSON.parse(text) as AlarmRule),
      packs: (s.packs.all() as string[]).map((text) => JSON.parse(text) as PackState),
      seeded: (meta('seeded') as string[] | undefined) ?? [],
      webhooks: (s.webhooks.all() as string[]).map((text) => JSON.parse(text) as Webhook),
      outbox: (s.pending.all() as string[]).map((text) => JSON.parse(text) as Notification),
      ...(writtenAt === undefined ? {} : { writtenAt }),
    };
  }

  /** One part of a change set (partsOf); `written_at` moves with the last. */
  applyPart(part: ChangeSet, last: boolean): void {
    this.#apply(part, last);
  }

  alarms(query: AlarmQuery): Alarm[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.state === 'open') where.push("state != 'cleared'");
    else if (query.state !== 'all') {
      where.push('state = ?');
      params.push(query.state);
    }
    if (query.batteryId !== undefined) {
      where.push('battery_id = ?');
      params.push(query.batteryId);
    }
    if (query.severity !== undefined) {
      where.push('severity = ?');
      params.push(query.severity);
    }
    if (query.ruleId !== undefined) {
      where.push('rule_id = ?');
      params.push(query.ruleId);
    }
    if (query.since !== undefined) {
      where.push('(cleared_at IS NULL OR cleared_at >= ?)');
      params.push(query.since);
    }
    const sql = `SELECT alarm FROM battery_alarms ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY raised_at DESC, id DESC LIMIT ?`;
    let statement = this.#queries.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql).pluck();
      this.#queries.set(sql, statement);
    }
    return (statement.all(...params, query.limit) as string[]).map((text) => JSON.parse(text) as Alarm);
  }

  alarm(id: string): AlarmWithEvents | null {
    const text = this.#statements.alarm.get(id) as string | undefined;
    if (text === undefined) return null;
    const events = (this.#statements.events.all(id) as string[]).map((event) => JSON.parse(event) as AlarmEvent);
    return { ...(JSON.parse(text) as Alarm), events };
  }

  async deleteClosedBefore(cutoff: number): Promise<number> {
    let deleted = 0;
    for (;;) {
      const removed = this.#db.transaction(() => {
        const ids = this.#statements.closedBefore.all(cutoff) as string[];
        for (const id of ids) {
          this.#statements.deleteEvents.run(id);
          this.#statements.deleteAlarm.run(id);
        }
        return ids.length;
      })();
      deleted += removed;
      if (removed < DELETE_CHUNK) {
        this.#statements.deleteFinishedBefore.run(cutoff);
        return deleted;
      }
      // Let other calls in between chunks.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  putWebhook(webhook: Webhook): void {
    this.#statements.putWebhook.run(webhook.id, webhook.created_at, JSON.stringify(webhook));
  }

  deleteWebhook(id: string): void {
    this.#db.transaction(() => {
      this.#statements.deleteNotificationsOf.run(id);
      this.#statements.deleteWebhook.run(id);
    })();
  }

  updateNotification(notification: Notification): void {
    this.#statements.updateNotification.run(notification.state, JSON.stringify(notification), notification.id);
  }

  deliveries(webhookId: string, limit: number): Notification[] {
    return (this.#statements.deliveries.all(webhookId, limit) as string[]).map((text) => JSON.parse(text) as Notification);
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

/**
 * A change set as transactions of about `maxRows` rows each. The unit is an alarm with its events
 * and notifications (a notification is never stored without its change, nor a change without its
 * notifications); a pack's state goes with its last alarm, so that a crash between parts leaves the
 * pack's older state, from which the restart evaluates its readings again (alarm and event ids are
 * stable: what was stored is not stored twice). Rules go first, `seeded` and `written_at` last.
 */
function partsOf(changes: ChangeSet, maxRows: number): ChangeSet[] {
  const size = changes.alarms.length + changes.events.length + (changes.outbox?.length ?? 0) + changes.packs.length;
  if (size <= maxRows) return [changes];
  const eventsOf = groupBy(changes.events, (event) => event.alarm_id);
  const outboxOf = groupBy(changes.outbox ?? [], (row) => row.alarm_id);
  const lastAlarmOf = new Map(changes.alarms.map((alarm) => [alarm.battery_id, alarm.id]));
  const packs = new Map(changes.packs.map((pack) => [pack.battery_id, pack]));
  const empty = (): ChangeSet => ({ rules: [], packs: [], alarms: [], events: [], outbox: [], writtenAt: changes.writtenAt });
  const parts: ChangeSet[] = [{ ...empty(), rules: changes.rules }];
  let rows = 0;
  for (const alarm of [...changes.alarms].sort((a, b) => (a.battery_id < b.battery_id ? -1 : a.battery_id > b.battery_id ? 1 : 0))) {
    const events = eventsOf.get(alarm.id) ?? [];
    const outbox = outboxOf.get(alarm.id) ?? [];
    if (rows > 0 && rows + 1 + events.length + outbox.length > maxRows) {
      parts.push(empty());
      rows = 0;
    }
    const part = parts.at(-1)!;
    part.alarms.push(alarm);
    part.events.push(...events);
    part.outbox!.push(...outbox);
    rows += 1 + events.length + outbox.length;
    eventsOf.delete(alarm.id);
    outboxOf.delete(alarm.id);
    const pack = packs.get(alarm.battery_id);
    if (pack !== undefined && lastAlarmOf.get(alarm.battery_id) === alarm.id) {
      part.packs.push(pack);
      packs.delete(alarm.battery_id);
    }
  }
  // The packs without alarm changes, and anything not tied to an alarm of this set, in the last part.
  const last = parts.at(-1)!;
  last.packs.push(...packs.values());
  for (const events of eventsOf.values()) last.events.push(...events);
  for (const outbox of outboxOf.values()) last.outbox!.push(...outbox);
  if (changes.seeded !== undefined) last.seeded = changes.seeded;
  return parts;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const group = groups.get(key(item));
    if (group === undefined) groups.set(key(item), [item]);
    else group.push(item);
  }
  return groups;
}
