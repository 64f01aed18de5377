/**
 * The embedded store: one SQLite file under DATA_DIR in WAL mode. Writes go to a writer thread
 * (sqlite-writer.ts) that owns the write connection; reads run on this thread on a connection of
 * their own, which WAL lets proceed while the writer commits. Indexed reads take microseconds, so
 * they need no thread of their own.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { RecordBatch } from '../ingest/record-batch.js';
import { STRING_COLUMNS } from '../records/columns.js';
import { aggregatedFields, arrayFields, byKind, KINDS, KIND_NAMES, type KindName, type StoredRecord } from '../records/kinds.js';
import { MAX_TIMESTAMP, MIN_TIMESTAMP } from '../records/schemas.js';
import { rollupFor } from './buckets.js';
import { lockDataDir } from './data-dir-lock.js';
import { configureConnection, ROLLUP_WIDTHS, rollupTable, selectList } from './sqlite-schema.js';
import { startWorker } from './sqlite-thread.js';
import type { ColumnarRequest, WriterData, WriterReady, WriterReply, WriterRequest } from './sqlite-writer.js';
import {
  RecordRefusedError,
  StoreUnavailableError,
  type AggregateBucket,
  type AggregateQuery,
  type BatterySummary,
  type HistoryQuery,
  type RangeQuery,
  type RecordFilter,
  type Store,
  type StoreHealth,
  type StoreLogger,
  type WriteOutcome,
} from './store.js';

export const SQLITE_FILE_NAME = 'battery_monitor.sqlite';
/**
 * Rows per keyset page of an export. A page is read synchronously on the event loop: 250 rows take
 * 1-1.6 ms here, 1,000 took 4-5.5 ms, the longest pause an export caused other requests
 * (bench/export-latency.ts).
 */
const EXPORT_PAGE_ROWS = 250;

type Row = Record<string, number | string | null>;

export interface SqliteStoreOptions {
  logger?: StoreLogger;
}

/**
 * Opens (creating on first use) the store in `dataDir`.
 *
 * Start-up repair: rows stamped outside the time the API accepts (MIN_TIMESTAMP..MAX_TIMESTAMP,
 * 2000 to 2100), stored before that bound existed, are removed before anything is served (the
 * writer thread does it before it says it is ready), and how many is logged once with the bounds.
 * Such a row (a device sending 1e300) owned "latest" for good and retention never reached it.
 * Removed rather than moved aside: no API could read them back, and a time like that is a broken
 * clock, not a reading worth keeping.
 */
export async function openSqliteStore(dataDir: string, options: SqliteStoreOptions = {}): Promise<SqliteStore> {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, SQLITE_FILE_NAME);
  const lock = lockDataDir(dataDir);
  let started: Awaited<ReturnType<typeof startWriterThread>>;
  try {
    started = await startWriterThread(file);
  } catch (error) {
    lock.release();
    throw error;
  }
  const { worker: writer, repaired } = started;
  if (repaired > 0) {
    options.logger?.warn(
      `SQLite store: removed ${repaired} records stamped before ${isoDate(MIN_TIMESTAMP)} or after ${isoDate(MAX_TIMESTAMP)} ` +
        `(stored before timestamps were bounded); pack counts and aggregates put right`,
    );
  }
  const db = new Database(file, { readonly: true });
  db.pragma('busy_timeout = 5000');
  db.pragma('cache_size = -16384');
  return new SqliteStore(file, db, writer, lock);
}

const isoDate = (seconds: number) => new Date(seconds * 1000).toISOString();

function startWriterThread(file: string): Promise<{ worker: Worker; repaired: number }> {
  const workerData: WriterData = { role: 'sqlite-writer', file, plausible: { min: MIN_TIMESTAMP, max: MAX_TIMESTAMP } };
  const worker = startWorker('sqlite-writer', workerData);
  return new Promise((resolve, reject) => {
    const onMessage = (message: WriterReady | { fatal: string }) => {
      worker.off('error', reject);
      if ('fatal' in message) {
        void worker.terminate();
        reject(new StoreUnavailableError(`cannot open ${file}: ${message.fatal}`));
      } else resolve({ worker, repaired: message.repaired });
    };
    worker.once('message', onMessage);
    worker.once('error', reject);
  });
}

export class SqliteStore implements Store {
  readonly name = 'sqlite';
  readonly file: string;
  readonly #db: Database.Database;
  readonly #worker: Worker;
  readonly #waiting = new Map<number, { resolve(reply: WriterReply): void; reject(error: Error): void }>();
  /** Per kind, the reads prepared so far, by the shape of their filter (filterOf). */
  readonly #statements: Record<KindName, Map<string, ReadStatements>>;
  #closing = false;
  #nextId = 1;
  #failure: Error | undefined;

  /** DATA_DIR held for this process (data-dir-lock.ts) until close. */
  readonly #lock: { release(): void };

  constructor(
    file: string,
    db: Database.Database,
    worker: Worker,
    lock: { release(): void },
  ) {
    this.file = file;
    this.#lock = lock;
    this.#db = db;
    this.#worker = worker;
    worker.on('message', (reply: WriterReply) => {
      const waiting = this.#waiting.get(reply.id);
      this.#waiting.delete(reply.id);
      waiting?.resolve(reply);
    });
    worker.on('error', (error) => this.#fail(error));
    worker.on('exit', (code) => this.#closing || this.#fail(new StoreUnavailableError(`the SQLite writer stopped (exit code ${code})`)));
    this.#statements = Object.fromEntries(KIND_NAMES.map((kind) => [kind, new Map()])) as Record<KindName, Map<string, ReadStatements>>;
  }

  async write(batches: readonly RecordBatch[]): Promise<WriteOutcome[]> {
    // Copies, transferred to the writer thread: the batches stay whole for the after-commit stage.
    const columnar: ColumnarRequest[] = batches.map((batch) => ({
      kind: batch.kind,
      count: batch.length,
      numbers: batch.numbers.slice(0, batch.length * batch.width),
      texts: batch.texts,
      textIndexes: batch.textIndexes.slice(0, batch.length * STRING_COLUMNS.length),
      keys: batch.keys,
      // Cloned to the writer only for batches with per-cell readings; null for every other.
      arrays: batch.arrays,
    }));
    const reply = await this.#send(
      { type: 'write', id: 0, requests: columnar },
      columnar.flatMap((request) => [request.numbers.buffer as ArrayBuffer, request.textIndexes.buffer as ArrayBuffer]),
    );
    if (!('outcomes' in reply)) throw new StoreUnavailableError('unexpected reply from the SQLite writer');
    return reply.outcomes.map((outcome) =>
      outcome.ok
        ? { ok: true, ids: outcome.ids.map(String), existing: outcome.existing }
        : { ok: false, error: new RecordRefusedError(`SQLite refused a record: ${outcome.message}`, outcome.reason, outcome.rows) },
    );
  }

  async latest(kind: KindName, batteryId?: string, source?: string): Promise<StoredRecord | null> {
    const reads = this.#reads(kind, { batteryId, source });
    const row = reads.latest.get(reads.params) as Row | undefined;
    return row === undefined ? null : toRecord(kind, row);
  }

  async history(kind: KindName, query: HistoryQuery): Promise<StoredRecord[]> {
    const reads = this.#reads(kind, query);
    const rows = reads.history.all({ ...reads.params, since: query.since, limit: query.limit }) as Row[];
    return rows.map((row) => toRecord(kind, row));
  }

  async aggregate(kind: KindName, query: AggregateQuery): Promise<AggregateBucket[]> {
    const spec = KINDS[kind];
    const fields = aggregatedFields(kind);
    const width = query.bucketSeconds;
    // Rollups are kept per pack, not per producer: a source filter is answered from the rows.
    const rollup = query.source === undefined ? rollupFor(width, ROLLUP_WIDTHS) : undefined;
    const { where, params } = filterOf(query);
    let sql: string;
    if (rollup === undefined) {
      // Widths under a minute cover short ranges: few raw rows.
      const stats = fields
        .map(({ name: f, alwaysStored }) => `min(${f}) AS min_${f}, max(${f}) AS max_${f}, sum(${f}) AS sum_${f}${alwaysStored ? '' : `, count(${f}) AS n_${f}`}`)
        .join(', ');
      sql = `SELECT @from + CAST((timestamp - @from) / @width AS INTEGER) * @width AS start, count(*) AS count, ${stats}
             FROM ${spec.collection} WHERE timestamp >= @from AND timestamp < @to ${where.map((clause) => `AND ${clause}`).join(' ')}
             GROUP BY start ORDER BY start`;
    } else {
      const stats = fields
        .map(({ name: f, alwaysStored }) => `min(min_${f}) AS min_${f}, max(max_${f}) AS max_${f}, sum(sum_${f}) AS sum_${f}${alwaysStored ? '' : `, sum(n_${f}) AS n_${f}`}`)
        .join(', ');
      sql = `SELECT CAST(bucket / @width AS INTEGER) * @width AS start, sum(count) AS count, ${stats}
             FROM ${rollupTable(spec, rollup)} WHERE bucket >= @from AND bucket < @to ${where.map((clause) => `AND ${clause}`).join(' ')}
             GROUP BY start ORDER BY start`;
    }
    const rows = this.#db.prepare(sql).all({ ...params, from: query.from, to: query.to, width }) as Row[];
    return rows.map((row) => {
      const count = row.count as number;
      const bucket: AggregateBucket = { start: row.start as number, count, min: {}, max: {}, mean: {} };
      for (const { name: f, alwaysStored } of fields) {
        const n = alwaysStored ? count : (row[`n_${f}`] as number | null) ?? 0;
        if (n === 0) continue;
        bucket.min[f] = row[`min_${f}`] as number;
        bucket.max[f] = row[`max_${f}`] as number;
        bucket.mean[f] = (row[`sum_${f}`] as number) / n;
      }
      return bucket;
    });
  }

  async *exportRange(kind: KindName, query: RangeQuery): AsyncIterable<StoredRecord> {
    const reads = this.#reads(kind, query);
    // Keyset pages: each page is a short read, so an export never pins a snapshot or the connection.
    let after: [number, number] = [query.from, -Infinity];
    for (;;) {
      const rows = reads.page.all({ ...reads.params, afterTime: after[0], afterId: after[1], to: query.to }) as Row[];
      for (const row of rows) yield toRecord(kind, row);
      if (rows.length < EXPORT_PAGE_ROWS) return;
      const last = rows[rows.length - 1]!;
      after = [last.timestamp as number, last._id as number];
    }
  }

  /** The prepared reads for a filter's shape (pack, source, both or neither), made on first use. */
  #reads(kind: KindName, filter: RecordFilter): { params: Record<string, string> } & ReadStatements {
    const { where, params, shape } = filterOf(filter);
    let statements = this.#statements[kind].get(shape);
    if (statements === undefined) {
      statements = prepareReads(this.#db, kind, where);
      this.#statements[kind].set(shape, statements);
    }
    return { ...statements, params };
  }

  async batteries(): Promise<BatterySummary[]> {
    const rows = this.#db
      .prepare('SELECT battery_id, kind, count, last_seen FROM battery_summary ORDER BY battery_id')
      .all() as { battery_id: string; kind: KindName; count: number; last_seen: number }[];
    const byId = new Map<string, BatterySummary>();
    for (const row of rows) {
      let summary = byId.get(row.battery_id);
      if (summary === undefined) {
        summary = {
          battery_id: row.battery_id,
          last_seen: row.last_seen,
          counts: Object.fromEntries(KIND_NAMES.map((kind) => [kind, 0])) as Record<KindName, number>,
          last_seen_by_kind: {},
        };
        byId.set(row.battery_id, summary);
      }
      summary.counts[row.kind] = row.count;
      summary.last_seen_by_kind[row.kind] = row.last_seen;
      summary.last_seen = Math.max(summary.last_seen, row.last_seen);
    }
    return [...byId.values()];
  }

  async deleteOlderThan(cutoff: number): Promise<number> {
    const reply = await this.#send({ type: 'delete', id: 0, cutoff });
    if (!('deleted' in reply)) throw new StoreUnavailableError('unexpected reply from the SQLite writer');
    return reply.deleted;
  }

  async health(): Promise<StoreHealth> {
    try {
      if (this.#failure !== undefined) throw this.#failure;
      this.#db.prepare('SELECT 1').get();
      return { ok: true, store: 'sqlite', mode: 'wal' };
    } catch (error) {
      return { ok: false, store: 'sqlite', error: (error as Error).message };
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    if (this.#failure === undefined) {
      const exited = new Promise((resolve) => this.#worker.once('exit', resolve));
      this.#worker.postMessage({ type: 'close' });
      await exited;
    }
    this.#db.close();
    this.#lock.release();
  }

  #send(message: WriterRequest, transfer: ArrayBuffer[] = []): Promise<WriterReply> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    message.id = id;
    return new Promise<WriterReply>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#worker.postMessage(message, transfer);
    }).then((reply) => {
      if ('error' in reply) throw new StoreUnavailableError(`SQLite write failed: ${reply.error}`);
      return reply;
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error instanceof StoreUnavailableError ? error : new StoreUnavailableError(error.message);
    for (const waiting of this.#waiting.values()) waiting.reject(this.#failure);
    this.#waiting.clear();
  }
}

/** The WHERE clauses of a filter, their parameters, and its shape (which clauses), which names its statements. */
function filterOf(filter: RecordFilter): { where: string[]; params: Record<string, string>; shape: string } {
  const where: string[] = [];
  const params: Record<string, string> = {};
  if (filter.batteryId !== undefined) {
    where.push('battery_id = @batteryId');
    params.batteryId = filter.batteryId;
  }
  if (filter.source !== undefined) {
    where.push('source = @source');
    params.source = filter.source;
  }
  return { where, params, shape: Object.keys(params).join(',') };
}

function prepareReads(db: Database.Database, kind: KindName, filter: readonly string[]) {
  const table = KINDS[kind].collection;
  const columns = selectList(kind);
  const and = filter.map((clause) => `${clause} AND `).join('');
  const where = filter.length === 0 ? '' : `WHERE ${filter.join(' AND ')}`;
  return {
    latest: db.prepare(`SELECT ${columns} FROM ${table} ${where} ORDER BY timestamp DESC, id DESC LIMIT 1`),
    history: db.prepare(`SELECT ${columns} FROM ${table} WHERE ${and}timestamp >= @since ORDER BY timestamp DESC, id DESC LIMIT @limit`),
    page: db.prepare(
      `SELECT ${columns} FROM ${table} WHERE ${and}(timestamp, id) > (@afterTime, @afterId) AND timestamp < @to ORDER BY timestamp, id LIMIT ${EXPORT_PAGE_ROWS}`,
    ),
  };
}

type ReadStatements = ReturnType<typeof prepareReads>;

const ARRAY_COLUMNS = byKind((kind): ReadonlySet<string> => new Set(arrayFields(kind.name).map((field) => field.name)));

/**
 * A row as the API answers it: the key as a string, no field for a NULL (a record that lacks it), an
 * array field's JSON text as the array it holds.
 */
function toRecord(kind: KindName, row: Row): StoredRecord {
  const record = {} as StoredRecord;
  const arrays = ARRAY_COLUMNS[kind];
  for (const column in row) {
    const value = row[column]!;
    if (value === null) continue;
    record[column] = arrays.has(column) ? (JSON.parse(value as string) as number[]) : value;
  }
  record._id = String(record._id);
  return record;
}
