/**
 * The analytics store of the embedded setup: DATA_DIR/analytics.sqlite, a file of its own on a
 * connection of this thread, for the reasons the alarm store has one (sqlite-alarm-store.ts): no
 * other writer, so no lock to wait for, and no queueing behind record batches on the writer thread.
 * WAL, synchronous=FULL. States and overrides are JSON.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../store/store.js';
import type { AnalyticsStore, LoadedAnalytics, PackOverrides } from './analytics-store.js';
import type { PackAnalytics } from './pack-state.js';

export const ANALYTICS_FILE_NAME = 'analytics.sqlite';
const SCHEMA_VERSION = 1;

export function openSqliteAnalyticsStore(dataDir: string): SqliteAnalyticsStore {
  mkdirSync(dataDir, { recursive: true });
  return new SqliteAnalyticsStore(path.join(dataDir, ANALYTICS_FILE_NAME));
}

export class SqliteAnalyticsStore implements AnalyticsStore {
  readonly name = 'sqlite';
  readonly file: string;
  readonly #db: Database.Database;
  readonly #save: (packs: readonly PackAnalytics[], writtenAt: number) => void;
  readonly #statements;

  constructor(file: string) {
    this.file = file;
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    // Nothing else writes this file: a lock held longer than this is another process on the same DATA_DIR.
    db.pragma('busy_timeout = 1000');
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

  async load(): Promise<LoadedAnalytics> {
    return this.#run(() => {
      const s = this.#statements;
      const written = s.meta.get('written_at') as string | undefined;
      return {
        packs: (s.packs.all() as string[]).map((text) => JSON.parse(text) as PackAnalytics),
        specs: (s.specs.all() as string[]).map((text) => JSON.parse(text) as PackOverrides),
        ...(written === undefined ? {} : { writtenAt: JSON.parse(written) as number }),
      };
    });
  }

  async loadPack(batteryId: string): Promise<PackAnalytics | undefined> {
    return this.#run(() => {
      const text = this.#statements.pack.get(batteryId) as string | undefined;
      return text === undefined ? undefined : (JSON.parse(text) as PackAnalytics);
    });
  }

  async savePacks(packs: readonly PackAnalytics[], writtenAt: number): Promise<void> {
    this.#run(() => this.#save(packs, writtenAt));
  }

  async loadSpecs(): Promise<PackOverrides[]> {
    return this.#run(() => (this.#statements.specs.all() as string[]).map((text) => JSON.parse(text) as PackOverrides));
  }

  async putSpecs(specs: PackOverrides): Promise<void> {
    this.#run(() => {
      if (Object.keys(specs.overrides).length === 0) this.#statements.deleteSpecs.run(specs.battery_id);
      else this.#statements.putSpecs.run(specs.battery_id, JSON.stringify(specs));
    });
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }

  /** SQLite errors (a full disk, a file locked by another process) as an outage: the engine retries, the API answers 503. */
  #run<T>(operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      if (error instanceof Database.SqliteError || (error as Error)?.name === 'SqliteError') {
        throw new StoreUnavailableError(`analytics store ${this.file}: ${(error as Error).message}`);
      }
      throw error;
    }
  }
}
