/** Shared by the ingest tests: the real SQLite store, instrumented. */
import Database from 'better-sqlite3';
import type { RecordBatch } from '../../src/ingest/record-batch.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import type { Store } from '../../src/store/store.js';
import { tempDir } from '../support/temp-dir.js';

/** The real SQLite store, with its write calls counted and, while `hold` is set, held back until released. */
export async function instrumentedStore(): Promise<{ store: Store; file: string; writes: RecordBatch[][]; hold(): () => void }> {
  const store = await openSqliteStore(tempDir());
  const writes: RecordBatch[][] = [];
  const write = store.write.bind(store);
  let gate: Promise<void> | undefined;
  store.write = async (batches) => {
    writes.push([...batches]);
    await gate;
    return write(batches);
  };
  const hold = () => {
    let release!: () => void;
    gate = new Promise((resolve) => (release = resolve));
    return () => {
      gate = undefined;
      release();
    };
  };
  return { store, file: store.file, writes, hold };
}

/**
 * Makes a real SQLite file refuse some records for themselves, as a constraint would: a trigger
 * that aborts the insert of a row `when` holds (SQL over NEW), on `table` (a kind's table, or one of
 * its rollup tables, whose failure the store cannot pin on a row). Added through a connection of
 * the test's own while the store is open; the store's statements pick up the new schema.
 */
export function refuseWhere(file: string, table: string, when: string): void {
  const db = new Database(file);
  try {
    db.exec(`CREATE TRIGGER test_refuse_${table} BEFORE INSERT ON ${table} WHEN ${when} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`);
  } finally {
    db.close();
  }
}
