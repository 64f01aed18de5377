/**
 * The SQLite writer thread. It owns the only write connection: every insert, rollup update and
 * retention delete runs here, so a sync to disk (synchronous=FULL) never stalls the event loop that
 * parses requests and decodes frames. Messages come from sqlite-store.ts; rows arrive columnar (one
 * Float64Array of numbers, transferred without copying, and an array of strings) because
 * structured-cloning one object per row costs more than the insert itself.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { KINDS, type KindName, type KindSpec } from '../records/kinds.js';
import { configureConnection, createSchema, numericColumns, ROLLUP_WIDTHS, rollupTable } from './sqlite-schema.js';

export interface ColumnarRequest {
  kind: KindName;
  count: number;
  /** Row-major: numericColumns(kind) per row; NaN for a missing device_time. */
  numbers: Float64Array;
  /** Per row: battery_id, source. */
  strings: string[];
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

interface KindStatements {
  insert: Database.Statement;
  idOfKey: Database.Statement;
  rollups: { width: number; upsert: Database.Statement }[];
  deletedPerBattery: Database.Statement;
  delete: Database.Statement;
  deleteRollups: Database.Statement[];
}

interface Rollup {
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
  const columns = ['battery_id', 'source', 'idem_key', ...numericColumns(kind)];
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
    const width = 3 + fieldCount;
    const { numbers, strings, keys } = request;
    const ids: number[] = new Array(request.count);
    const existing: number[] = [];
    const rollups = ROLLUP_WIDTHS.map(() => new Map<string, Rollup>());
    const summary = new Map<string, { count: number; lastSeen: number }>();
    const args: (number | string | null)[] = new Array(3 + width);
    for (let row = 0; row < request.count; row++) {
      const base = row * width;
      const batteryId = strings[row * 2]!;
      args[0] = batteryId;
      args[1] = strings[row * 2 + 1]!;
      args[2] = keys === null ? null : keys[row]!;
      for (let c = 0; c < width; c++) {
        const value = numbers[base + c]!;
        args[3 + c] = c === 2 && Number.isNaN(value) ? null : value;
      }
      const result = s.insert.run(args);
      if (result.changes === 0) {
        // Already stored under this idempotency key: answer its id, count it once.
        ids[row] = s.idOfKey.get(args[2]) as number;
        existing.push(row);
        continue;
      }
      ids[row] = Number(result.lastInsertRowid);
      const timestamp = numbers[base]!;
      const seen = summary.get(batteryId);
      if (seen === undefined) summary.set(batteryId, { count: 1, lastSeen: timestamp });
      else {
        seen.count++;
        if (timestamp > seen.lastSeen) seen.lastSeen = timestamp;
      }
      ROLLUP_WIDTHS.forEach((rollupWidth, r) => {
        const bucket = Math.floor(timestamp / rollupWidth) * rollupWidth;
        const id = `${batteryId}\u0000${bucket}`;
        let rollup = rollups[r]!.get(id);
        if (rollup === undefined) {
          rollup = { batteryId, bucket, count: 0, min: [], max: [], sum: [] };
          for (let f = 0; f < fieldCount; f++) {
            rollup.min.push(Infinity);
            rollup.max.push(-Infinity);
            rollup.sum.push(0);
          }
          rollups[r]!.set(id, rollup);
        }
        rollup.count++;
        for (let f = 0; f < fieldCount; f++) {
          const value = numbers[base + 3 + f]!;
          if (value < rollup.min[f]!) rollup.min[f] = value;
          if (value > rollup.max[f]!) rollup.max[f] = value;
          rollup.sum[f]! += value;
        }
      });
    }
    s.rollups.forEach(({ upsert }, r) => {
      for (const rollup of rollups[r]!.values()) {
        const values: number[] = [];
        for (let f = 0; f < fieldCount; f++) values.push(rollup.min[f]!, rollup.max[f]!, rollup.sum[f]!);
        upsert.run(rollup.batteryId, rollup.bucket, rollup.count, ...values);
      }
    });
    for (const [batteryId, { count, lastSeen }] of summary) upsertSummary.run(batteryId, request.kind, count, lastSeen);
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
