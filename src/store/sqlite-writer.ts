/**
 * The SQLite writer thread. It owns the only write connection: every insert, rollup update and
 * retention delete runs here, so a sync to disk (synchronous=FULL) never stalls the event loop that
 * parses requests and decodes frames. Messages come from sqlite-store.ts; rows arrive columnar, as
 * record batches (ingest/record-batch.ts) hold them: a Float64Array of numbers and a Uint32Array of
 * string indexes, both transferred without copying, and each distinct string once, because
 * structured-cloning one object per row costs more than the insert itself.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { RowArrays } from '../ingest/record-batch.js';
import { aggregatedFields, arrayFields, KINDS, type KindName, type KindSpec } from '../records/kinds.js';
import { derivedAt, measurementsAt, numericColumns, STRING_COLUMNS } from '../records/columns.js';
import { configureConnection, createSchema, ROLLUP_WIDTHS, rollupTable } from './sqlite-schema.js';
import type { RefusalReason } from './store.js';

export interface ColumnarRequest {
  kind: KindName;
  count: number;
  /** Row-major: numericColumns(kind) per row; NaN for an absent value. */
  numbers: Float64Array;
  /** The distinct strings of the batch. */
  texts: string[];
  /** Row-major: STRING_COLUMNS per row, as indexes into `texts`. */
  textIndexes: Uint32Array;
  /** Per row idempotency key, or null when no row has one. */
  keys: (string | null)[] | null;
  /** Per row array fields (per-cell readings), or null when no row has any. */
  arrays: (RowArrays | undefined)[] | null;
}

export type WriterRequest =
  | { type: 'write'; id: number; requests: ColumnarRequest[] }
  | { type: 'delete'; id: number; cutoff: number };

/** A request's rows the store refused for themselves: `rows` empty when the failing statement was not a row's insert. */
export interface WriterRefusal {
  ok: false;
  message: string;
  reason: RefusalReason;
  rows: number[];
}

export type WriterReply =
  | { id: number; outcomes: ({ ok: true; ids: number[]; existing: number[] } | WriterRefusal)[] }
  | { id: number; deleted: number }
  | { id: number; error: string };

export interface WriterData {
  role: 'sqlite-writer';
  file: string;
  /** Timestamps a stored row may have (records/schemas.ts): rows outside are removed at start-up. */
  plausible: { min: number; max: number };
}

/** The writer's first message: ready, with the rows the start-up repair removed. */
export interface WriterReady {
  ready: true;
  repaired: number;
}

const BATTERY_ID_STRING = STRING_COLUMNS.indexOf('battery_id');
/** The insert's arguments: the strings, the idempotency key, the numbers. */
const KEY_ARG = STRING_COLUMNS.length;
const FIRST_NUMBER_ARG = KEY_ARG + 1;

interface KindStatements {
  /** A row without arrays: neither they nor the numbers derived from them are bound (they are NULL). */
  insert: Database.Statement;
  /** A row with arrays: every column. */
  insertWithArrays: Database.Statement;
  idOfKey: Database.Statement;
  rollups: { width: number; upsert: Database.Statement }[];
  deletedPerBattery: Database.Statement;
  delete: Database.Statement;
  deleteRollups: Database.Statement[];
}

interface Rollup {
  /** Index of the pack in the request's texts. */
  pack: number;
  batteryId: string;
  bucket: number;
  count: number;
  min: number[];
  max: number[];
  sum: number[];
  /** Per field, the records that had it (fields a record may lack are counted apart). */
  n: number[];
}

/** An insert of these columns: only a known idempotency key is skipped. */
function insertInto(db: Database.Database, table: string, columns: readonly string[]): Database.Statement {
  return db.prepare(
    // OR IGNORE would also skip NOT NULL violations silently.
    `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})
     ON CONFLICT (idem_key) WHERE idem_key IS NOT NULL DO NOTHING`,
  );
}

function prepareKind(db: Database.Database, kind: KindSpec): KindStatements {
  const table = kind.collection;
  const fields = aggregatedFields(kind.name);
  const numeric = numericColumns(kind.name);
  const columns = [...STRING_COLUMNS, 'idem_key', ...numeric.slice(0, derivedAt(kind.name))];
  const allColumns = [...STRING_COLUMNS, 'idem_key', ...numeric, ...arrayFields(kind.name).map((field) => field.name)];
  const rollups = ROLLUP_WIDTHS.map((width) => {
    const rollupColumns = fields.flatMap(({ name, alwaysStored }) => [`min_${name}`, `max_${name}`, `sum_${name}`, ...(alwaysStored ? [] : [`n_${name}`])]);
    // A field a record may lack has NULL figures in a bucket none of whose records had it; the scalar
    // min() and max() of SQLite answer NULL when either side is, hence the coalesce.
    const updates = fields
      .flatMap(({ name: f, alwaysStored }) =>
        alwaysStored
          ? [`min_${f} = min(min_${f}, excluded.min_${f})`, `max_${f} = max(max_${f}, excluded.max_${f})`, `sum_${f} = sum_${f} + excluded.sum_${f}`]
          : [
              `min_${f} = coalesce(min(min_${f}, excluded.min_${f}), min_${f}, excluded.min_${f})`,
              `max_${f} = coalesce(max(max_${f}, excluded.max_${f}), max_${f}, excluded.max_${f})`,
              `sum_${f} = coalesce(sum_${f} + excluded.sum_${f}, sum_${f}, excluded.sum_${f})`,
              `n_${f} = n_${f} + excluded.n_${f}`,
            ],
      )
      .join(', ');
    const upsert = db.prepare(
      `INSERT INTO ${rollupTable(kind, width)} (battery_id, bucket, count, ${rollupColumns.join(', ')})
       VALUES (${['?', '?', '?', ...rollupColumns.map(() => '?')].join(', ')})
       ON CONFLICT (battery_id, bucket) DO UPDATE SET count = count + excluded.count, ${updates}`,
    );
    return { width, upsert };
  });
  return {
    insert: insertInto(db, table, columns),
    insertWithArrays: insertInto(db, table, allColumns),
    idOfKey: db.prepare(`SELECT id FROM ${table} WHERE idem_key = ?`).pluck(),
    rollups,
    deletedPerBattery: db.prepare(
      `SELECT battery_id, count(*) AS count FROM ${table} WHERE timestamp < ? GROUP BY battery_id`,
    ),
    delete: db.prepare(`DELETE FROM ${table} WHERE timestamp < ?`),
    deleteRollups: ROLLUP_WIDTHS.map((width) => db.prepare(`DELETE FROM ${rollupTable(kind, width)} WHERE bucket < ?`)),
  };
}

function startWriter(file: string): void {
  const db = new Database(file);
  configureConnection(db);
  createSchema(db);
  const statements = Object.fromEntries(
    Object.values(KINDS).map((kind) => [kind.name, prepareKind(db, kind)]),
  ) as Record<KindName, KindStatements>;
  const upsertSummary = db.prepare(
    `INSERT INTO battery_summary (battery_id, kind, count, last_seen) VALUES (?, ?, ?, ?)
     ON CONFLICT (battery_id, kind) DO UPDATE SET count = count + excluded.count, last_seen = max(last_seen, excluded.last_seen)`,
  );
  const decrementSummary = db.prepare(`UPDATE battery_summary SET count = count - ? WHERE battery_id = ? AND kind = ?`);
  const dropEmptySummaries = db.prepare(`DELETE FROM battery_summary WHERE count <= 0`);

  /** The row whose insert is running; -1 once the rows are in (rollups and summary follow). */
  let insertingRow = -1;

  /**
   * Inserts one request's rows; answers each row's id (the existing one for a known key) and which
   * rows were already stored under their key, so that only the rows stored here are published.
   */
  function insertRequest(request: ColumnarRequest): { ids: number[]; existing: number[] } {
    const s = statements[request.kind];
    const fields = aggregatedFields(request.kind);
    const fieldCount = fields.length;
    // The fields every record has come first (the measurements); those after them (derived from
    // arrays) only rows with arrays have, and only they are looked at for them.
    const alwaysCount = fields.filter((field) => field.alwaysStored).length;
    const width = numericColumns(request.kind).length;
    const plainWidth = derivedAt(request.kind);
    const arrayNames = arrayFields(request.kind).map((field) => field.name);
    const at = measurementsAt(request.kind);
    const timestampAt = numericColumns(request.kind).indexOf('timestamp');
    const { numbers, texts, textIndexes, keys, arrays } = request;
    const ids: number[] = new Array(request.count);
    const existing: number[] = [];
    insertingRow = -1;
    const rollups = ROLLUP_WIDTHS.map(() => new Map<string, Rollup>());
    // Rows of one pack and minute come in runs (a connection's frames): the rollups of the last
    // row are looked up again only when the pack or the bucket changes.
    const current: (Rollup | undefined)[] = ROLLUP_WIDTHS.map(() => undefined);
    // Per string of the batch (its packs among them): rows stored and newest timestamp.
    const counts = new Float64Array(texts.length);
    const newest = new Float64Array(texts.length).fill(-Infinity);
    const plainArgs: (number | string | null)[] = new Array(FIRST_NUMBER_ARG + plainWidth);
    const allArgs: (number | string | null)[] = new Array(FIRST_NUMBER_ARG + width + arrayNames.length);
    for (let row = 0; row < request.count; row++) {
      const base = row * width;
      const rowArrays = arrays === null ? undefined : arrays[row];
      const args = rowArrays === undefined ? plainArgs : allArgs;
      for (let c = 0; c < STRING_COLUMNS.length; c++) args[c] = texts[textIndexes[row * STRING_COLUMNS.length + c]!]!;
      const pack = textIndexes[row * STRING_COLUMNS.length + BATTERY_ID_STRING]!;
      args[KEY_ARG] = keys === null ? null : keys[row]!;
      // An absent optional number is NaN, which SQLite stores as NULL.
      const numberCount = rowArrays === undefined ? plainWidth : width;
      for (let c = 0; c < numberCount; c++) args[FIRST_NUMBER_ARG + c] = numbers[base + c]!;
      if (rowArrays !== undefined) {
        for (let a = 0; a < arrayNames.length; a++) {
          const values = rowArrays[arrayNames[a]!];
          args[FIRST_NUMBER_ARG + width + a] = values === undefined ? null : JSON.stringify(values);
        }
      }
      insertingRow = row;
      const result = (rowArrays === undefined ? s.insert : s.insertWithArrays).run(args);
      if (result.changes === 0) {
        // Already stored under this idempotency key: answer its id, count it once.
        ids[row] = s.idOfKey.get(args[KEY_ARG]) as number;
        existing.push(row);
        continue;
      }
      ids[row] = Number(result.lastInsertRowid);
      const timestamp = numbers[base + timestampAt]!;
      counts[pack]! += 1;
      if (timestamp > newest[pack]!) newest[pack] = timestamp;
      for (let r = 0; r < ROLLUP_WIDTHS.length; r++) {
        const rollupWidth = ROLLUP_WIDTHS[r]!;
        const bucket = Math.floor(timestamp / rollupWidth) * rollupWidth;
        let rollup = current[r];
        if (rollup === undefined || rollup.bucket !== bucket || rollup.pack !== pack) {
          const id = `${pack}/${bucket}`;
          rollup = rollups[r]!.get(id);
          if (rollup === undefined) {
            rollup = { pack, batteryId: texts[pack]!, bucket, count: 0, min: [], max: [], sum: [], n: [] };
            for (let f = 0; f < fieldCount; f++) {
              rollup.min.push(Infinity);
              rollup.max.push(-Infinity);
              rollup.sum.push(0);
              rollup.n.push(0);
            }
            rollups[r]!.set(id, rollup);
          }
          current[r] = rollup;
        }
        rollup.count++;
        for (let f = 0; f < alwaysCount; f++) {
          const value = numbers[base + at + f]!;
          if (value < rollup.min[f]!) rollup.min[f] = value;
          if (value > rollup.max[f]!) rollup.max[f] = value;
          rollup.sum[f]! += value;
        }
        if (rowArrays === undefined) continue;
        for (let f = alwaysCount; f < fieldCount; f++) {
          const value = numbers[base + at + f]!;
          if (Number.isNaN(value)) continue;
          if (value < rollup.min[f]!) rollup.min[f] = value;
          if (value > rollup.max[f]!) rollup.max[f] = value;
          rollup.sum[f]! += value;
          rollup.n[f]! += 1;
        }
      }
    }
    insertingRow = -1;
    s.rollups.forEach(({ upsert }, r) => {
      for (const rollup of rollups[r]!.values()) {
        const values: (number | null)[] = [];
        for (let f = 0; f < alwaysCount; f++) values.push(rollup.min[f]!, rollup.max[f]!, rollup.sum[f]!);
        for (let f = alwaysCount; f < fieldCount; f++) {
          const n = rollup.n[f]!;
          if (n === 0) values.push(null, null, null, 0);
          else values.push(rollup.min[f]!, rollup.max[f]!, rollup.sum[f]!, n);
        }
        upsert.run(rollup.batteryId, rollup.bucket, rollup.count, ...values);
      }
    });
    counts.forEach((count, pack) => count > 0 && upsertSummary.run(texts[pack], request.kind, count, newest[pack]));
    return { ids, existing };
  }

  /**
   * One transaction for all requests; a savepoint each, so that a request with a record the store
   * refuses (a constraint, a value it cannot bind) spares the rest. Any other failure (a full disk,
   * an I/O error, a lock) is the store's trouble, not the records': it fails the whole write, which
   * the store reports as an outage.
   */
  const writeAll = db.transaction((requests: ColumnarRequest[]) =>
    requests.map((request) => {
      db.exec('SAVEPOINT request');
      try {
        const { ids, existing } = insertRequest(request);
        db.exec('RELEASE request');
        return { ok: true as const, ids, existing };
      } catch (error) {
        const reason = refusalReason(error);
        if (reason === undefined) throw error;
        db.exec('ROLLBACK TO request');
        db.exec('RELEASE request');
        return { ok: false as const, message: (error as Error).message, reason, rows: insertingRow < 0 ? [] : [insertingRow] } satisfies WriterRefusal;
      }
    }),
  );

  /** Removes rows and rollup buckets before `cutoff`, keeping the per-pack counts right. */
  const deleteBefore = db.transaction((cutoff: number) => {
    let deleted = 0;
    for (const kind of Object.values(KINDS)) {
      const s = statements[kind.name];
      for (const { battery_id, count } of s.deletedPerBattery.all(cutoff) as { battery_id: string; count: number }[]) {
        decrementSummary.run(count, battery_id, kind.name);
      }
      deleted += s.delete.run(cutoff).changes;
      for (const statement of s.deleteRollups) statement.run(cutoff);
    }
    dropEmptySummaries.run();
    return deleted;
  });

  /**
   * The start-up repair (see openSqliteStore): removes the rows stamped outside [min, max] and puts
   * right what they touched, in one transaction. Rollup buckets wholly outside go; the two edge
   * buckets, which may hold rows of both sides, are rebuilt from the rows that stay. A pack's count
   * and last-seen time are recounted from its rows, whatever the summary said. Answers the rows removed.
   */
  const removeImplausible = db.transaction((min: number, max: number) => {
    let removed = 0;
    for (const kind of Object.values(KINDS)) {
      const table = kind.collection;
      // Two range searches on the time index (named: unhinted, the planner scans the pack index),
      // so that a start-up with nothing to remove reads next to nothing.
      const byTime = `${table} INDEXED BY ${table}_time`;
      const packs = db
        .prepare(`SELECT battery_id FROM ${byTime} WHERE timestamp < @min UNION SELECT battery_id FROM ${byTime} WHERE timestamp > @max`)
        .pluck()
        .all({ min, max }) as string[];
      if (packs.length === 0) continue;
      removed += db.prepare(`DELETE FROM ${table} WHERE timestamp < @min OR timestamp > @max`).run({ min, max }).changes;
      const fields = aggregatedFields(kind.name);
      const rollupColumns = fields.flatMap(({ name: f, alwaysStored }) => [`min_${f}`, `max_${f}`, `sum_${f}`, ...(alwaysStored ? [] : [`n_${f}`])]);
      const rollupValues = fields.flatMap(({ name: f, alwaysStored }) => [`min(${f})`, `max(${f})`, `sum(${f})`, ...(alwaysStored ? [] : [`count(${f})`])]);
      for (const width of ROLLUP_WIDTHS) {
        const rollup = rollupTable(kind, width);
        const low = Math.floor(min / width) * width;
        const high = Math.floor(max / width) * width;
        db.prepare(`DELETE FROM ${rollup} WHERE bucket <= @low OR bucket >= @high`).run({ low, high });
        const rebuild = db.prepare(
          `INSERT INTO ${rollup} (battery_id, bucket, count, ${rollupColumns.join(', ')})
           SELECT battery_id, @bucket, count(*), ${rollupValues.join(', ')} FROM ${table}
           WHERE timestamp >= @bucket AND timestamp < @bucket + @width GROUP BY battery_id`,
        );
        for (const bucket of new Set([low, high])) rebuild.run({ bucket, width });
      }
      const recount = db.prepare(
        `UPDATE battery_summary SET count = (SELECT count(*) FROM ${table} WHERE battery_id = @pack),
           last_seen = coalesce((SELECT max(timestamp) FROM ${table} WHERE battery_id = @pack), 0)
         WHERE battery_id = @pack AND kind = @kind`,
      );
      for (const pack of packs) recount.run({ pack, kind: kind.name });
    }
    dropEmptySummaries.run();
    return removed;
  });
  const { plausible } = workerData as WriterData;
  const repaired = removeImplausible(plausible.min, plausible.max);

  const port = parentPort!;
  port.on('message', (message: WriterRequest | { type: 'close' }) => {
    if (message.type === 'close') {
      db.close();
      port.close();
      return;
    }
    try {
      if (message.type === 'write') port.postMessage({ id: message.id, outcomes: writeAll(message.requests) } satisfies WriterReply);
      else port.postMessage({ id: message.id, deleted: deleteBefore(message.cutoff) } satisfies WriterReply);
    } catch (error) {
      port.postMessage({ id: message.id, error: (error as Error).message } satisfies WriterReply);
    }
  });
  port.postMessage({ ready: true, repaired } satisfies WriterReady);
}

/** Why SQLite refused a statement because of the values it was given; undefined for any other failure. */
function refusalReason(error: unknown): RefusalReason | undefined {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') return 'duplicate_key';
    // NOT NULL, CHECK, a trigger's RAISE(ABORT, ...), foreign keys.
    if (code.startsWith('SQLITE_CONSTRAINT')) return 'constraint';
    if (code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG' || code === 'SQLITE_RANGE') return 'invalid_value';
    return undefined;
  }
  // better-sqlite3 refusing to bind a value.
  if (error instanceof TypeError || error instanceof RangeError) return 'invalid_value';
  return undefined;
}

if (parentPort !== null && (workerData as { role?: string } | null)?.role === 'sqlite-writer') {
  try {
    startWriter((workerData as WriterData).file);
  } catch (error) {
    parentPort.postMessage({ fatal: (error as Error).message });
  }
}
