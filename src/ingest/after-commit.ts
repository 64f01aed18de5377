/**
 * The after-commit stage: once a write is durable, every subscriber sees what it stored, commit by
 * commit in commit order, whichever producer sent it (HTTP, the collector, the relay through HTTP).
 * The live feed subscribes here; alarms and analytics subscribe the same way.
 *
 * A subscriber is called once per commit with one entry per kind and pack the commit stored rows
 * for (CommittedRows): the rows in timestamp order, their store ids, and how many of them are
 * backfill. Records an idempotent retry found already stored are not in it: each stored row reaches
 * subscribers once. A subscriber runs on the event loop that takes requests and frames, so it keeps
 * to quick work; what it throws is logged and does not reach the other subscribers or the producers.
 *
 * Backfill: a row older than the newest row its pack (of that kind) already had when the commit
 * came, as far as this process has seen since it started: a device's buffered readings sent after a
 * reconnect, a relay's spool delivered after an outage, a batch retried after newer ones were stored.
 * Such rows come first in `rows` (timestamp order) and `backfill` says how many; state built from
 * the pack's timeline (an alarm's last value, a charge integral) should not take them as the present.
 */
import type { KindName } from '../records/kinds.js';
import { RecordBatch } from './record-batch.js';

/** What one commit stored for one pack of one kind. */
export interface CommittedRows {
  readonly kind: KindName;
  readonly batteryId: string;
  /** The rows, in timestamp order (rows with equal timestamps in the order they were submitted). */
  readonly rows: RecordBatch;
  /** The store's id of each row. */
  readonly ids: readonly string[];
  /** Rows [0, backfill) are older than the newest row this pack had before this commit. */
  readonly backfill: number;
}

export type CommitSubscriber = (commit: readonly CommittedRows[]) => void;

/** Runs of rows of one batch, in submission order, of one kind and pack. */
type Runs = readonly { entry: StoredBatch; rows: number[] }[];

interface Group {
  kind: KindName;
  batteryId: string;
  runs: { entry: StoredBatch; rows: number[] }[];
  count: number;
}

/** A batch a write stored: its ids, and which of its rows were already stored under their key. */
export interface StoredBatch {
  readonly batch: RecordBatch;
  readonly ids: readonly string[];
  /** Rows (ascending) that this write did not store: their idempotency key was stored already. */
  readonly existing: readonly number[];
}

export interface AfterCommitLogger {
  error(obj: object, msg?: string): void;
}

export class AfterCommit {
  readonly #subscribers = new Set<CommitSubscriber>();
  /** Newest timestamp stored so far per kind and pack. */
  readonly #newest = new Map<string, number>();
  readonly #log: AfterCommitLogger | undefined;

  constructor(logger?: AfterCommitLogger) {
    this.#log = logger;
  }

  /** Calls `subscriber` after every commit from now on; answers the function that stops it. */
  subscribe(subscriber: CommitSubscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  /** The ingest sink calls this once per durable write, in commit order. */
  publish(stored: readonly StoredBatch[]): void {
    if (this.#subscribers.size === 0) {
      // Nobody to tell (the usual case under heavy ingest): only keep the packs' newest timestamps.
      for (const { batch, existing } of stored) this.#advance(batch, existing);
      return;
    }
    const commit = this.#group(stored);
    for (const subscriber of this.#subscribers) {
      try {
        subscriber(commit);
      } catch (error) {
        if (this.#log !== undefined) this.#log.error({ err: error }, 'an after-commit subscriber failed');
        // Without a logger, loudly, but not through the sink that called: it answers its producers.
        else setImmediate(() => {
          throw error;
        });
      }
    }
  }

  #group(stored: readonly StoredBatch[]): CommittedRows[] {
    // Per kind and pack, its stored rows: runs of rows of one batch, in submission order.
    const groups = new Map<string, Group>();
    for (const entry of stored) {
      const { batch, existing } = entry;
      let skip = 0;
      let group: Group | undefined;
      let run: number[] = [];
      let runPack = -1;
      for (let row = 0; row < batch.length; row++) {
        if (existing[skip] === row) {
          skip++;
          continue;
        }
        const pack = batch.batteryIdIndex(row);
        if (pack !== runPack || group === undefined) {
          const batteryId = batch.texts[pack]!;
          const id = `${batch.kind}\u0000${batteryId}`;
          group = groups.get(id);
          if (group === undefined) {
            group = { kind: batch.kind, batteryId, runs: [], count: 0 };
            groups.set(id, group);
          }
          run = [];
          runPack = pack;
          group.runs.push({ entry, rows: run });
        }
        run.push(row);
        group.count++;
      }
    }
    const commit: CommittedRows[] = [];
    for (const [id, group] of groups) {
      const committed = ordered(group.kind, group.runs, group.count);
      const { rows } = committed;
      const before = this.#newest.get(id) ?? -Infinity;
      let backfill = 0;
      while (backfill < rows.length && rows.timestamp(backfill) < before) backfill++;
      this.#newest.set(id, Math.max(before, rows.timestamp(rows.length - 1)));
      commit.push({ kind: group.kind, batteryId: group.batteryId, rows, ids: committed.ids, backfill });
    }
    return commit;
  }

  #advance(batch: RecordBatch, existing: readonly number[]): void {
    // Rows of one pack come in runs (a connection's frames): one look-up per run, not per row.
    let pack = -1;
    let newest = -Infinity;
    let skip = 0;
    for (let row = 0; row < batch.length; row++) {
      if (existing[skip] === row) {
        skip++;
        continue;
      }
      const rowPack = batch.batteryIdIndex(row);
      if (rowPack !== pack) {
        if (pack >= 0) this.#raise(batch, pack, newest);
        pack = rowPack;
        newest = -Infinity;
      }
      const timestamp = batch.timestamp(row);
      if (timestamp > newest) newest = timestamp;
    }
    if (pack >= 0) this.#raise(batch, pack, newest);
  }

  #raise(batch: RecordBatch, pack: number, timestamp: number): void {
    const id = `${batch.kind}\u0000${batch.texts[pack]}`;
    if (timestamp > (this.#newest.get(id) ?? -Infinity)) this.#newest.set(id, timestamp);
  }
}

/**
 * One pack's rows of a commit in timestamp order. The usual case, all rows of one batch already in
 * order (a connection's frames), is handed on as it is; otherwise the rows are copied, sorted.
 */
function ordered(kind: KindName, runs: Runs, count: number): { rows: RecordBatch; ids: readonly string[] } {
  const only = runs[0]!;
  if (runs.length === 1 && only.rows.length === only.entry.batch.length && inOrder(only.entry.batch, only.rows)) {
    return { rows: only.entry.batch, ids: only.entry.ids };
  }
  const order: { entry: StoredBatch; row: number }[] = [];
  for (const { entry, rows } of runs) for (const row of rows) order.push({ entry, row });
  // Array.prototype.sort is stable: equal timestamps keep submission order.
  order.sort((a, b) => a.entry.batch.timestamp(a.row) - b.entry.batch.timestamp(b.row));
  const rows = new RecordBatch(kind, count);
  const ids: string[] = [];
  for (const { entry, row } of order) {
    rows.appendRowOf(entry.batch, row);
    ids.push(entry.ids[row]!);
  }
  return { rows, ids };
}

function inOrder(batch: RecordBatch, rows: readonly number[]): boolean {
  for (let i = 1; i < rows.length; i++) if (batch.timestamp(rows[i]!) < batch.timestamp(rows[i - 1]!)) return false;
  return true;
}

/** The rows of a commit whose ids are not in `seen`, in the same order (the commit itself when none is). */
export function withoutIds(commit: CommittedRows, seen: ReadonlySet<string>): RecordBatch {
  const { rows, ids } = commit;
  if (seen.size === 0 || !ids.some((id) => seen.has(id))) return rows;
  const kept = new RecordBatch(rows.kind, rows.length);
  for (let row = 0; row < rows.length; row++) if (!seen.has(ids[row]!)) kept.appendRowOf(rows, row);
  return kept;
}
