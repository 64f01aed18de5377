/**
 * The analytics store of the embedded setup: DATA_DIR/analytics.sqlite, a file of its own on the
 * side stores' thread (store/sqlite-thread.ts), for the reasons the alarm store has them
 * (sqlite-alarm-store.ts): no other writer, so no lock to wait for, no queueing behind record batches
 * on the records' writer thread, and commits synced off the event loop. States and overrides are JSON.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { openSideFile, SqliteSideStore } from '../store/sqlite-thread.js';
import type { AnalyticsStore, LoadedAnalytics, PackOverrides } from './analytics-store.js';
import type { PackAnalytics } from './pack-state.js';

export const ANALYTICS_FILE_NAME = 'analytics.sqlite';
const SCHEMA_VERSION = 1;

export function openSqliteAnalyticsStore(dataDir: string): SqliteAnalyticsStore {
  mkdirSync(dataDir, { recursive: true });
  return new SqliteAnalyticsStore(path.join(dataDir, ANALYTICS_FILE_NAME));
}

/** The store as the service sees it: each call answered by the file's thread. */
export class SqliteAnalyticsStore extends SqliteSideStore<SqliteAnalyticsFile> implements AnalyticsStore {
  constructor(file: string) {
    super({ openCore }, import.meta.url, file, 'analytics store');
  }

  load = () => this.thread.call('load');
  loadPack = (batteryId: string) => this.thread.call('loadPack', batteryId);
  savePacks = (packs: readonly PackAnalytics[], writtenAt: number) => this.thread.call('savePacks', packs, writtenAt);
  loadSpecs = () => this.thread.call('loadSpecs');
  putSpecs = (specs: PackOverrides) => this.thread.call('putSpecs', specs);
}

/** The core the thread runs (sqlite-thread-host.ts). */
export const openCore = (file: string) => new SqliteAnalyticsFile(file);

/** The file itself, on its thread. */
class SqliteAnalyticsFile {
  readonly #db: Database.Database;
  readonly #save: (packs: readonly PackAnalytics[], writtenAt: number) => void;
  readonly #statements;

  constructor(file: string) {
    const db = openSideFile(file);
    db.exec(`
CREATE TABLE IF NOT EXISTS analytics_packs (battery_id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS analytics_specs (battery_id TEXT PRIMARY KEY, specs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS analytics_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    this.#db = db;
    const s = {
      putPack: db.prepare('INSERT OR REPLACE INTO analytics_packs (battery_id, state) VALUES (?, ?)'),
      packs: db.prepare('SELECT state FROM analytics_packs').pluck(),
      pack: db.prepare('SELECT state FROM analytics_packs WHERE battery_id = ?').pluck(),
      putSpecs: db.prepare('INSERT OR REPLACE INTO analytics_specs (battery_id, specs) VALUES (?, ?)'),
      deleteSpecs: db.prepare('DELETE FROM analytics_specs WHERE battery_id = ?'),
      specs: db.prepare('SELECT specs FROM analytics_specs').pluck(),
      putMeta: db.prepare('INSERT OR REPLACE INTO analytics_meta (key, value) VALUES (?, ?)'),
      meta: db.prepare('SELECT value FROM analytics_meta WHERE key = ?').pluck(),
    };
    this.#statements = s;
    this.#save = db.transaction((packs: readonly PackAnalytics[], writtenAt: number) => {
      for (const pack of packs) s.putPack.run(pack.battery_id, JSON.stringify(pack));
      s.putMeta.run('written_at', JSON.stringify(writtenAt));
    });
  }

  load(): LoadedAnalytics {
    const s = this.#statements;
    const written = s.meta.get('written_at') as string | undefined;
    return {
      packs: (s.packs.all() as string[]).map((text) => JSON.parse(text) as PackAnalytics),
      specs: (s.specs.all() as string[]).map((text) => JSON.parse(text) as PackOverrides),
      ...(written === undefined ? {} : { writtenAt: JSON.parse(written) as number }),
    };
  }

  loadPack(batteryId: string): PackAnalytics | undefined {
    const text = this.#statements.pack.get(batteryId) as string | undefined;
    return text === undefined ? undefined : (JSON.parse(text) as PackAnalytics);
  }

  savePacks(packs: readonly PackAnalytics[], writtenAt: number): void {
    this.#save(packs, writtenAt);
  }

  loadSpecs(): PackOverrides[] {
    return (this.#statements.specs.all() as string[]).map((text) => JSON.parse(text) as PackOverrides);
  }

  putSpecs(specs: PackOverrides): void {
    if (Object.keys(specs.overrides).length === 0) this.#statements.deleteSpecs.run(specs.battery_id);
    else this.#statements.putSpecs.run(specs.battery_id, JSON.stringify(specs));
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
