/**
 * SQLite tables, shared by the writer thread and the reading connection. One table per kind with
 * the original collections' names, one per-minute and one per-hour rollup table per kind (kept in
 * the same transaction as the rows, so aggregates over long ranges never scan raw rows), and a
 * per-pack summary for GET /api/batteries.
 */
import type Database from 'better-sqlite3';
import { ALL_KINDS, type KindSpec } from '../records/kinds.js';

export const ROLLUP_WIDTHS = [60, 3600] as const;

export const rollupTable = (kind: KindSpec, width: number) => `${kind.collection}_rollup_${width}`;

/** Numeric columns of a row as the writer receives them, after the strings. */
export function numericColumns(kind: KindSpec): string[] {
  return ['timestamp', 'received_at', 'device_time', ...Object.keys(kind.fields)];
}

export function createSchema(db: Database.Database): void {
  const statements: string[] = [];
  for (const kind of ALL_KINDS) {
    const fields = Object.entries(kind.fields)
      .map(([name, field]) => `${name} ${field.type === 'integer' ? 'INTEGER' : 'REAL'} NOT NULL`)
      .join(',\n  ');
    const table = kind.collection;
    statements.push(`CREATE TABLE IF NOT EXISTS ${table} (
  id INTEGER PRIMARY KEY,
  battery_id TEXT NOT NULL,
  timestamp REAL NOT NULL,
  received_at REAL NOT NULL,
  source TEXT NOT NULL,
  device_time REAL,
  idem_key TEXT,
  ${fields}
)`);
    statements.push(`CREATE INDEX IF NOT EXISTS ${table}_battery_time ON ${table} (battery_id, timestamp)`);
    statements.push(`CREATE INDEX IF NOT EXISTS ${table}_time ON ${table} (timestamp)`);
    statements.push(`CREATE UNIQUE INDEX IF NOT EXISTS ${table}_key ON ${table} (idem_key) WHERE idem_key IS NOT NULL`);
    const rollupColumns = Object.keys(kind.fields)
      .map((name) => `min_${name} REAL NOT NULL, max_${name} REAL NOT NULL, sum_${name} REAL NOT NULL`)
      .join(',\n  ');
    for (const width of ROLLUP_WIDTHS) {
      statements.push(`CREATE TABLE IF NOT EXISTS ${rollupTable(kind, width)} (
  battery_id TEXT NOT NULL,
  bucket INTEGER NOT NULL,
  count INTEGER NOT NULL,
  ${rollupColumns},
  PRIMARY KEY (battery_id, bucket)
) WITHOUT ROWID`);
      statements.push(
        `CREATE INDEX IF NOT EXISTS ${rollupTable(kind, width)}_bucket ON ${rollupTable(kind, width)} (bucket)`,
      );
    }
  }
  statements.push(`CREATE TABLE IF NOT EXISTS battery_summary (
  battery_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  count INTEGER NOT NULL,
  last_seen REAL NOT NULL,
  PRIMARY KEY (battery_id, kind)
) WITHOUT ROWID`);
  db.exec(statements.join(';\n'));
}

/** Settings for every connection: WAL so readers never block the writer, FULL sync for durability. */
export function configureConnection(db: Database.Database): void {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.pragma('cache_size = -16384');
}
