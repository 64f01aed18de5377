/** Shared by the ingest tests: the real SQLite store, instrumented. */
import type { RecordBatch } from '../../src/ingest/record-batch.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import type { Store } from '../../src/store/store.js';
import { tempDir } from '../support/temp-dir.js';

/** The real SQLite store, with its write calls counted and, while `hold` is set, held back until released. */
export async function instrumentedStore(): Promise<{ store: Store; writes: RecordBatch[][]; hold(): () => void }> {
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
  return { store, writes, hold };
}
