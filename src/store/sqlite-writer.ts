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
import { KINDS, type KindName, type KindSpec } from '../records/kinds.js';
import { measurementsAt, numericColumns, STRING_COLUMNS } from '../records/columns.js';
import { configureConnection, createSchema, ROLLUP_WIDTHS, rollupTable } from './sqlite-schema.js';

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
}

export type WriterRequest =
  | { type: 'write'; id: number; requests: ColumnarRequest[] }
  | { type: 'delete'; id: number; cutoff: number };

export type WriterReply =
  | { id: number; outcomes: ({ ok: true; ids: number[]; existing: number[] } | { ok: false; message: string })[] }
  | { id: number; deleted: number }
  | { id: number; error: string };

const BATTERY_ID_STRING = STRING_COLUMNS.indexOf('battery_id');
/** The insert's arguments: the strings, the idempotency key, the numbers. */
const KEY_ARG = STRING_COLUMNS.length;
const FIRST_NUMBER_ARG = KEY_ARG + 1;

interface KindStatements {
  insert: Database.Statement;
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
}

function prepareKind(db: Database.Database, kind: KindSpec): KindStatements {
  const table = kind.collection;
  const fields = Object.keys(kind.fields);
  const columns = [...STRING_COLUMNS, 'idem_key', ...numericColumns(kind.name)];
  const insert = db.prepare(
    // Only a known idempotency key is skipped; OR IGNORE would also skip NOT NULL violations silently.
    `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})
     ON CONFLICT (idem_key) WHERE idem_key IS NOT NULL DO NOTHING`,
  );
  const rollups = ROLLUP_WIDTHS.map((width) => {
    const rollupColumns = fields.flatMap((f) => [`min_${f}`, `max_${f}`, `sum_${f}`]);
    const updates = fields
      .flatMap((f) => [`min_${f} = min(min_${f}, excluded.min_${f})`, `max_${f} = max(max_${f}, excluded.max_${f})`, `sum_${f} = sum_${f} + excluded.sum_${f}`])
      .join(', ');
    const upsert = db.prepare(
      `INSERT INTO ${rollupTable(kind, width)} (battery_id, bucket, count, ${rollupColumns.join(', ')})
       VALUES (${['?', '?', '?', ...rollupColumns.map(() => '?')].join(', ')})
       ON CONFLICT (battery_id, bucket) DO UPDATE SET count = count + excluded.count, ${updates}`,
    );
    return { width, upsert };
  });
  return {
    insert,
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

  /**
   * Inserts one request's rows; answers each row's id (the existing one for a known key) and which
   * rows were already stored under their key, so that only the rows stored here are published.
   */
  function insertRequest(request: ColumnarRequest): { ids: number[]; existing: number[] } {
    const kind = KINDS[request.kind];
    const s = statements[request.kind];
    const fieldCount = Object.keys(kind.fields).length;
    const width = numericColumns(request.kind).length;
    const at = measurementsAt(request.kind);
    const timestampAt = numericColumns(request.kind).indexOf('timestamp');
    const { numbers, texts, textIndexes, keys } = request;
    const ids: number[] = new Array(request.count);
    const existing: number[] = [];
    const rollups = ROLLUP_WIDTHS.map(() => new Map<string, Rollup>());
    // Rows of one pack and minute come in runs (a connection's frames): the rollups of the last
    // row are looked up again only when the pack or the bucket changes.
    const current: (Rollup | undefined)[] = ROLLUP_WIDTHS.map(() => undefined);
    // Per string of the batch (its packs among them): rows stored and newest timestamp.
    const counts = new Float64Array(texts.length);
    const newest = new Float64Array(texts.length).fill(-Infinity);
    const args: (number | string | null)[] = new Array(FIRST_NUMBER_ARG + width);
    for (let row = 0; row < request.count; row++) {
      const base = row * width;
      for (let c = 0; c < STRING_COLUMNS.length; c++) args[c] = texts[textIndexes[row * STRING_COLUMNS.length + c]!]!;
      const pack = textIndexes[row * STRING_COLUMNS.length + BATTERY_ID_STRING]!;
      args[KEY_ARG] = keys === null ? null : keys[row]!;
      // An absent optional number is NaN, which SQLite stores as NULL.
      for (let c = 0; c < width; c++) args[FIRST_NUMBER_ARG + c] = numbers[base + c]!;
      const result = s.insert.run(args);
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
            rollup = { pack, batteryId: texts[pack]!, bucket, count: 0, min: [], max: [], sum: [] };
            for (let f = 0; f < fieldCount; f++) {
              rollup.min.push(Infinity);
              rollup.max.push(-Infinity);
              rollup.sum.push(0);
            }
            rollups[r]!.set(id, rollup);
          }
          current[r] = rollup;
        }
        rollup.count++;
        for (let f = 0; f < fieldCount; f++) {
          const value = numbers[base + at + f]!;
          if (value < rollup.min[f]!) rollup.min[f] = value;
          if (value > rollup.max[f]!) rollup.max[f] = value;
          rollup.sum[f]! += value;
        }
      }
    }
    s.rollups.forEach(({ upsert }, r) => {
      for (const rollup of rollups[r]!.values()) {
        const values: number[] = [];
        for (let f = 0; f < fieldCount; f++) values.push(rollup.min[f]!, rollup.max[f]!, rollup.sum[f]!);
        upsert.run(rollup.batteryId, rollup.bucket, rollup.count, ...values);
      }
    });
    counts.forEach((count, pack) => count > 0 && upsertSummary.run(texts[pack], request.kind, count, newest[pack]));
    return { ids, existing };
  }

  /** One transaction for all requests; a savepoint each, so one failing request spares the rest. */
  const writeAll = db.transaction((requests: ColumnarRequest[]) =>
    requests.map((request) => {
      db.exec('SAVEPOINT request');
      try {
        const { ids, existing } = insertRequest(request);
        db.exec('RELEASE request');
        return { ok: true as const, ids, existing };
      } catch (error) {
        db.exec('ROLLBACK TO request');
        db.exec('RELEASE request');
        return { ok: false as const, message: (error as Error).message };
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
  port.postMessage({ ready: true });
}

if (parentPort !== null && (workerData as { role?: string } | null)?.role === 'sqlite-writer') {
  try {
    startWriter((workerData as { file: string }).file);
  } catch (error) {
    parentPort.postMessage({ fatal: (error as Error).message });
  }
}
