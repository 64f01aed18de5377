/**
 * The Store interface, in domain types. sqlite-store.ts and mongodb-store.ts implement it, and one
 * conformance suite (test/store/conformance.ts) runs unchanged against each.
 */
import type { RecordBatch } from '../ingest/record-batch.js';
import type { KindName, StoredRecord } from '../records/kinds.js';

/**
 * One outcome per batch written: its records' ids in row order, or why the whole batch failed:
 * StoreUnavailableError when the store is away (an outage: the same batch may succeed later),
 * RecordRefusedError (or any other error) when the store refused records of this batch for
 * themselves, which retrying will not change.
 * `existing` lists the rows (ascending) that this write did not store because their idempotency key
 * was stored already, by an earlier write or earlier in this one: their ids are the stored records'
 * ids. Everything else in an ok batch was stored by this write. What runs after a commit (the
 * after-commit stage) hands on only the rows this write stored, so a retried request publishes
 * nothing twice. Usually empty: only keyed records can be in it.
 */
export type WriteOutcome = { ok: true; ids: string[]; existing: number[] } | { ok: false; error: Error };

/** Which records a read looks at: one pack's, one producer's (source), or both; all when unset. */
export interface RecordFilter {
  batteryId?: string;
  /** Only records with this source (e.g. the service's own analytics, battery_monitor_analytics). */
  source?: string;
}

export interface HistoryQuery extends RecordFilter {
  /** Unix seconds: records with timestamp >= since. */
  since: number;
  limit: number;
}

export interface RangeQuery extends RecordFilter {
  /** Unix seconds, inclusive. */
  from: number;
  /** Unix seconds, exclusive. */
  to: number;
  /**
   * MongoDB, several instances: only records inserted below this write position (at it too when
   * `inclusive`), what the cluster feed had handed on (cluster/cluster-feed.ts: readPosition); records
   * of no position (written by the original service) count as below. SQLite ignores it (one process).
   */
  writtenBefore?: WritePosition;
}

export interface WritePosition {
  position: number;
  inclusive: boolean;
}

export interface AggregateQuery extends RangeQuery {
  /** Bucket width in seconds; `from` is a multiple of it (see buckets.ts). */
  bucketSeconds: number;
}

/**
 * Count, min, max and mean of each of the kind's aggregated fields (aggregatedFields) over one time
 * bucket. A field a record may lack (derived from per-cell readings) is left out of a bucket none of
 * whose records had it, and its mean is over those that had it.
 */
export interface AggregateBucket {
  /** Unix seconds at the start of the bucket. */
  start: number;
  count: number;
  min: Record<string, number>;
  max: Record<string, number>;
  mean: Record<string, number>;
}

export interface BatterySummary {
  battery_id: string;
  /** Newest timestamp of any kind. */
  last_seen: number;
  counts: Record<KindName, number>;
  last_seen_by_kind: Partial<Record<KindName, number>>;
}

export interface StoreHealth {
  ok: boolean;
  store: 'sqlite' | 'mongodb';
  /** e.g. 'wal' for SQLite, 'timeseries' or 'plain' for MongoDB. */
  mode?: string;
  /** Why the store is unreachable; never holds a secret. */
  error?: string;
}

export interface Store {
  readonly name: 'sqlite' | 'mongodb';
  /**
   * Stores the batches in as few transactions as the store allows (group commit); each batch is all
   * or nothing. Resolves once the writes are durable. A row whose key is already stored is skipped
   * and answers the stored record's id.
   */
  write(batches: readonly RecordBatch[]): Promise<WriteOutcome[]>;
  latest(kind: KindName, batteryId?: string, source?: string): Promise<StoredRecord | null>;
  /** Newest first. */
  history(kind: KindName, query: HistoryQuery): Promise<StoredRecord[]>;
  /**
   * Buckets that hold at least one record, oldest first. From the rollups where the bucket width
   * allows, except with a source filter: rollups are per pack, not per producer.
   */
  aggregate(kind: KindName, query: AggregateQuery): Promise<AggregateBucket[]>;
  /** Oldest first, streamed: never holds the whole range in memory. */
  exportRange(kind: KindName, query: RangeQuery): AsyncIterable<StoredRecord>;
  batteries(): Promise<BatterySummary[]>;
  /** Removes records with timestamp < cutoff (Unix seconds); answers how many. */
  deleteOlderThan(cutoff: number): Promise<number>;
  health(): Promise<StoreHealth>;
  close(): Promise<void>;
}

/** What a store logs: a pino logger fits, and so does console. */
export interface StoreLogger {
  info(message: string): void;
  warn(message: string): void;
}

/** The store is unreachable or failing: the API answers 503, not 500. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
}

/**
 * Why a store refused a record for itself, a short stable word (a metric label, an answer's
 * detail): duplicate_key (a unique index of the store already holds its value), constraint (a
 * constraint or trigger of the store), invalid_value (a value the store cannot hold), store_refused
 * (anything else the store would not take).
 */
export type RefusalReason = 'duplicate_key' | 'constraint' | 'invalid_value' | 'store_refused';

/** What a client is told about a refusal: no store message, which may name hosts, databases or values. */
export const REFUSAL_TEXT: Record<RefusalReason, string> = {
  duplicate_key: 'a unique index of the store already holds one of its values',
  constraint: 'it breaks a constraint of the store',
  invalid_value: 'the store cannot hold one of its values',
  store_refused: 'the store would not take it',
};

/**
 * The store refused records of a batch for themselves (not an outage): retrying them will not store
 * them, and the batch's other records could be stored without them. The message is for the log
 * (secrets removed); `rows` are the refused rows of the batch, ascending, or empty when the store
 * cannot tell which of them it refused.
 */
export class RecordRefusedError extends Error {
  override name = 'RecordRefusedError';
  constructor(
    message: string,
    readonly reason: RefusalReason,
    readonly rows: readonly number[],
  ) {
    super(message);
  }
}
