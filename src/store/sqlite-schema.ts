/**
 * SQLite tables, shared by the writer thread and the reading connection. One table per kind with
 * the original collections' names, one per-minute and one per-hour rollup table per kind (kept in
 * the same transaction as the rows, so aggregates over long ranges never scan raw rows), and a
 * per-pack summary for GET /api/batteries.
 */
import type Database from 'better-sqlite3';
import { ALL_KINDS, recordFields, type FieldType, type KindName, type KindSpec } from '../records/kinds.js';

export const ROLLUP_WIDTHS = [60, 3600] as const;

export const rollupTable = (kind: KindSpec, width: number) => `${kind.collection}_rollup_${width}`;

const SQL_TYPES: Record<FieldType, string> = { number: 'REAL', integer: 'INTEGER', string: 'TEXT' };

/** The store's key: `_id` in the API, the rowid here. */
const KEY_COLUMN = 'id';

/** A kind's columns, the record's fields in the table's order, then the idempotency key. */
function columnDefinitions(kind: KindName): string[] {
  const columns = recordFields(kind).map((field) =>
    field.setBy === 'store'
      ? `${KEY_COLUMN} INTEGER PRIMARY KEY`
      : `${field.name} ${SQL_TYPES[field.type]}${field.alwaysStored ? ' NOT NULL' : ''}`,
  );
  return [...columns, 'idem_key TEXT'];
}

/** What a read selects: every field of the kind's records, named as the API names them. */
export function selectList(kind: KindName): string {
  return recordFields(kind)
    .map((field) => (field.setBy === 'store' ? `${KEY_COLUMN} AS ${field.name}` : field.name))
    .join(', ');
}

export function createSchema(db: Database.Database): void {
  const statements: string[] = [];
  for (const kind of ALL_KINDS) {
    const table = kind.collection;
    statements.push(`CREATE TABLE IF NOT EXISTS ${table} (\n  ${columnDefinitions(kind.name).join(',\n  ')}\n)`);
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
