/**
 * SQLite tables, shared by the writer thread and the reading connection. One table per kind with
 * the original collections' names, one per-minute and one per-hour rollup table per kind (kept in
 * the same transaction as the rows, so aggregates over long ranges never scan raw rows), and a
 * per-pack summary for GET /api/batteries.
 *
 * Array fields (per-cell readings) are TEXT columns holding the array as JSON, NULL for a record
 * without it (docs/decisions/0010-per-cell.md says why not a BLOB). A rollup keeps count,
 * min, max and sum of each aggregated field; for a field a record may lack (the numbers derived from
 * the arrays) also `n_` (how many of the bucket's records had it), its min, max and sum NULL while none did.
 *
 * The file's layout has a version (PRAGMA user_version, SCHEMA_VERSION): a file of an older layout is
 * brought up to date when the writer opens it, keeping its rows (migrate()); a file of a newer one is
 * refused rather than half understood.
 */
import type Database from 'better-sqlite3';
import { aggregatedFields, ALL_KINDS, recordFields, type FieldType, type KindName, type KindSpec } from '../records/kinds.js';

export const ROLLUP_WIDTHS = [60, 3600] as const;

/**
 * The layout version. 0: before per-cell readings (no array or derived columns); 1: with them.
 * Files of version 0 gain the new columns, all nullable, so their rows read as records without cells.
 */
export const SCHEMA_VERSION = 1;

export const rollupTable = (kind: KindSpec, width: number) => `${kind.collection}_rollup_${width}`;

const SQL_TYPES: Record<FieldType, string> = { number: 'REAL', integer: 'INTEGER', string: 'TEXT', numbers: 'TEXT' };

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

/** A rollup table's columns besides pack, bucket and count: per aggregated field, its figures. */
function rollupColumnDefinitions(kind: KindName): string[] {
  return aggregatedFields(kind).flatMap(({ name, alwaysStored }) =>
    alwaysStored
      ? [`min_${name} REAL NOT NULL`, `max_${name} REAL NOT NULL`, `sum_${name} REAL NOT NULL`]
      : [`min_${name} REAL`, `max_${name} REAL`, `sum_${name} REAL`, `n_${name} INTEGER NOT NULL DEFAULT 0`],
  );
}

/** What a read selects: every field of the kind's records, named as the API names them. */
export function selectList(kind: KindName): string {
  return recordFields(kind)
    .map((field) => (field.setBy === 'store' ? `${KEY_COLUMN} AS ${field.name}` : field.name))
    .join(', ');
}

export function createSchema(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`the file's layout is version ${version}, newer than this program's (${SCHEMA_VERSION}): run a newer version of the service`);
  }
  const statements: string[] = [];
  for (const kind of ALL_KINDS) {
    const table = kind.collection;
    statements.push(`CREATE TABLE IF NOT EXISTS ${table} (\n  ${columnDefinitions(kind.name).join(',\n  ')}\n)`);
    statements.push(`CREATE INDEX IF NOT EXISTS ${table}_battery_time ON ${table} (battery_id, timestamp)`);
    statements.push(`CREATE INDEX IF NOT EXISTS ${table}_time ON ${table} (timestamp)`);
    statements.push(`CREATE UNIQUE INDEX IF NOT EXISTS ${table}_key ON ${table} (idem_key) WHERE idem_key IS NOT NULL`);
    for (const width of ROLLUP_WIDTHS) {
      statements.push(`CREATE TABLE IF NOT EXISTS ${rollupTable(kind, width)} (
  battery_id TEXT NOT NULL,
  bucket INTEGER NOT NULL,
  count INTEGER NOT NULL,
  ${rollupColumnDefinitions(kind.name).join(',\n  ')},
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
  db.transaction(() => {
    db.exec(statements.join(';\n'));
    if (version < SCHEMA_VERSION) migrate(db);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}

/**
 * Brings the tables of an older file up to this layout: every column the kinds table names that a
 * table lacks is added (CREATE TABLE IF NOT EXISTS keeps an existing table as it was). Only columns a
 * row may lack can be added so; the rows already there read as records without them, and their
 * rollup buckets as buckets with no derived figures. A new column every record must have would need
 * a value for the old rows: refused, naming it.
 */
function migrate(db: Database.Database): void {
  for (const kind of ALL_KINDS) {
    addMissingColumns(db, kind.collection, columnDefinitions(kind.name));
    for (const width of ROLLUP_WIDTHS) addMissingColumns(db, rollupTable(kind, width), rollupColumnDefinitions(kind.name));
  }
}

function addMissingColumns(db: Database.Database, table: string, definitions: readonly string[]): void {
  const present = new Set((db.pragma(`table_info(${table})`) as { name: string }[]).map((column) => column.name));
  for (const definition of definitions) {
    const name = definition.split(' ')[0]!;
    if (present.has(name)) continue;
    if (/NOT NULL/.test(definition) && !/DEFAULT/.test(definition)) {
      throw new Error(`cannot add ${table}.${name} to an existing file: every row would need a value for it`);
    }
    db.exec(`ALTER TABLE ${table} ADD COLUMN ${definition}`);
  }
}

/** Settings for every connection: WAL so readers never block the writer, FULL sync for durability. */
export function configureConnection(db: Database.Database): void {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.pragma('cache_size = -16384');
}
