/**
 * The MongoDB store: Atlas, or any server that speaks the MongoDB wire protocol (FerretDB, DocumentDB,
 * Cosmos DB), through the official driver. Several API instances may share one database.
 *
 * Start-up never waits on the server for long: openMongoStore resolves after one bounded attempt to
 * reach it, and set-up (mongodb-setup.ts) is retried, on demand and every few seconds, until it has
 * run once. Every operation is bounded in time and fails with StoreUnavailableError while the
 * server is away (the API answers 503); the driver reconnects by itself. Nothing this store logs or
 * throws holds the URI's credentials.
 *
 * A request is all or nothing only as far as the server allows: a record that fails validation
 * fails its request before anything is sent, and a request that loses a record to a server-side
 * error has its other records deleted again, but a connection lost mid-insert can leave part of a
 * request stored. Producers that resend use idempotency keys, which makes the resend harmless.
 *
 * Errors are told apart as the ingest sink needs them: a server away, unreachable, timing out,
 * failing over or refusing to serve is an outage (StoreUnavailableError, retried); a record the
 * server refuses for itself (a unique index other than the idempotency key's, a validator, a value
 * it cannot hold, BSON it cannot encode) fails its request with a RecordRefusedError naming the
 * record where the server says which (the sink then refuses only that record).
 *
 * A write answers after one round trip per kind (the insertMany); the per-pack counts behind
 * batteries() follow after the answer, coalesced across writes (mongodb-summary.ts). An update an
 * outage lost marks its packs, whose counts are recounted from the records, in the background, once
 * the server answers again (#recountAll).
 */
import type { RecordBatch } from '../ingest/record-batch.js';
import { MongoClient, ObjectId, type AnyBulkWriteOperation, type Db, type Document, type Filter, type MongoClientOptions } from 'mongodb';
import { aggregatedFields, DEFAULT_BATTERY_ID, KIND_NAMES, KINDS, type KindName, type RecordField, type StoredRecord } from '../records/kinds.js';
import { MAX_TIMESTAMP, MIN_TIMESTAMP } from '../records/schemas.js';
import {
  batteryFilter,
  dateOf,
  finite,
  fromDocument,
  idForKey,
  projectionFor,
  recordFilter,
  recordProblem,
  summaryId,
  TIME_FIELD,
  toDocument,
  type RecordDocument,
  type SummaryDocument,
} from './mongodb-documents.js';
import { bucketGroup, countLegacyDocumentsOnce, isReplicaSet, serverRefused, setUp, type KindCollection, type Setup } from './mongodb-setup.js';
import { SummaryQueue, type SummaryIncrement } from './mongodb-summary.js';
import { maskMongoUri, redactor, uriOptionNames } from './mongodb-uri.js';
import { WriteFloor } from '../cluster/write-floor.js';
import { withDeadline } from './deadline.js';
import {
  RecordRefusedError,
  StoreUnavailableError,
  type AggregateBucket,
  type AggregateQuery,
  type BatterySummary,
  type HistoryQuery,
  type RangeQuery,
  type RefusalReason,
  type Store,
  type StoreHealth,
  type StoreLogger,
  type WriteOutcome,
} from './store.js';

export type { StoreLogger };

export interface MongoStoreOptions {
  uri: string;
  databaseName: string;
  /** 0 keeps everything. */
  retentionDays: number;
  logger?: StoreLogger;
  /** How long to look for a reachable server before an operation fails (unless the URI sets it). */
  serverSelectionTimeoutMs?: number;
  /** Upper bound on any one store operation, whatever the driver does. */
  operationTimeoutMs?: number;
  /** Pause between set-up attempts while the server is away. */
  retryIntervalMs?: number;
  /**
   * How long per-pack count increments wait to be coalesced into one summary update after the
   * writes that made them have answered (mongodb-summary.ts).
   */
  summaryDelayMs?: number;
  /**
   * Tests only: run the time-series query and write paths on whatever collections there are, so that
   * a server without time-series collections (FerretDB) still exercises them. health() tells the truth.
   */
  timeseriesPaths?: boolean;
}

/** The bound of an export's first batch, which runs its query (see exportRange). */
const EXPORT_FIRST_BATCH_TIMEOUT_MS = 60_000;
const DEFAULTS = { serverSelectionTimeoutMs: 2500, operationTimeoutMs: 10_000, retryIntervalMs: 5000, summaryDelayMs: 100 };
/** Packs × kinds whose counts may wait for the next summary update before it goes at once. */
const MAX_PENDING_SUMMARY = 10_000;
/** Set-up builds indexes, which on a large existing collection takes minutes, not seconds. */
const SETUP_TIMEOUT_MS = 10 * 60_000;
const EXPORT_BATCH = 1000;
const AGGREGATE_SCAN_BATCH = 5000;
const SILENT: StoreLogger = { info() {}, warn() {} };

/**
 * The ids of a batch's records that have no key, made once per batch, and the batches written
 * before: a write the server did not answer in time (a timeout, a lost connection) may have been
 * done all the same, and when the ingest sink writes the batch again its records meet their own ids
 * instead of being stored twice. They count as stored by this write: the write before was never
 * acknowledged, so nobody (producer or after-commit subscriber) has heard of them.
 */
const unkeyedIds = new WeakMap<RecordBatch, ObjectId[]>();
const attempted = new WeakSet<RecordBatch>();

function unkeyedIdOf(batch: RecordBatch, row: number): ObjectId {
  let ids = unkeyedIds.get(batch);
  if (ids === undefined) unkeyedIds.set(batch, (ids = []));
  return (ids[row] ??= new ObjectId());
}

export async function openMongoStore(options: MongoStoreOptions): Promise<MongoStore> {
  const store = new MongoStore(options);
  // One bounded attempt, so that a healthy start logs its mode before serving; a failed one is
  // retried in the background and does not stop the service from starting.
  await store.ready().catch(() => undefined);
  return store;
}

export class MongoStore implements Store {
  readonly name = 'mongodb';
  /** The write positions of this instance's inserts, for the cluster feed. */
  readonly writeFloor = new WriteFloor();
  /**
   * Told the documents each insert stored (in row order, with their position), before the insert's
   * position is released: the cluster feed hands this instance's own records on from memory.
   */
  onWritten: ((kind: KindName, docs: readonly RecordDocument[]) => void) | undefined;
  readonly #client: MongoClient;
  readonly #databaseName: string;
  readonly #retentionDays: number;
  readonly #log: StoreLogger;
  readonly #redact: (message: string) => string;
  readonly #where: string;
  readonly #operationTimeoutMs: number;
  readonly #retryIntervalMs: number;
  readonly #timeseriesPaths: boolean;
  readonly #summary: SummaryQueue;
  #setup: Setup | undefined;
  #settingUp: Promise<Setup> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #lastProblem: string | undefined;
  #legacyCount: Promise<void> | undefined;
  #closed = false;
  /** Per kind, the packs whose count a lost summary update left low: recounted from the records (#recountAll). */
  readonly #toRecount = new Map<KindName, Set<string>>();
  /** Per kind, the recount in progress: the kind's writes wait for it. */
  readonly #recounting = new Map<KindName, Promise<void>>();
  /** Writes sent whose counts are not yet in the summary queue. */
  readonly #writing = new Set<Promise<unknown>>();
  #recountTimer: NodeJS.Timeout | undefined;
  #recountRun: Promise<void> | undefined;

  constructor(options: MongoStoreOptions) {
    this.#databaseName = options.databaseName;
    this.#retentionDays = options.retentionDays;
    this.#log = options.logger ?? SILENT;
    this.#redact = redactor(options.uri);
    this.#where = maskMongoUri(options.uri);
    this.#operationTimeoutMs = options.operationTimeoutMs ?? DEFAULTS.operationTimeoutMs;
    this.#retryIntervalMs = options.retryIntervalMs ?? DEFAULTS.retryIntervalMs;
    this.#timeseriesPaths = options.timeseriesPaths ?? false;
    this.#summary = new SummaryQueue({
      write: (increments) => this.#writeSummary(increments),
      failed: (error, lost) => {
        this.#log.warn(
          `MongoDB store: pack summary not updated, counts of ${lost.length} pack/kind pairs are low by ` +
            `${lost.reduce((n, increment) => n + increment.count, 0)} records: ${this.#storeError(error).message}; ` +
            `they are recounted from the records once the server answers`,
        );
        this.#markForRecount(lost);
      },
      delayMs: options.summaryDelayMs ?? DEFAULTS.summaryDelayMs,
      maxPending: MAX_PENDING_SUMMARY,
    });
    const selection = options.serverSelectionTimeoutMs ?? DEFAULTS.serverSelectionTimeoutMs;
    const set = uriOptionNames(options.uri);
    const clientOptions: MongoClientOptions = { appName: 'battery-monitor', ignoreUndefined: true };
    if (!set.has('serverselectiontimeoutms')) clientOptions.serverSelectionTimeoutMS = selection;
    if (!set.has('connecttimeoutms')) clientOptions.connectTimeoutMS = selection;
    try {
      this.#client = new MongoClient(options.uri, clientOptions);
    } catch (error) {
      // A malformed URI: the parse error may quote it.
      throw new Error(`MongoDB store: ${this.#redact((error as Error).message)}`);
    }
  }

  /**
   * Resolves once set-up has run; rejects with StoreUnavailableError while the server is away. A
   * caller waits at most the operation bound; set-up itself may take longer (index builds on a large
   * existing collection) and goes on in the background.
   */
  ready(): Promise<Setup> {
    if (this.#setup !== undefined) return Promise.resolve(this.#setup);
    if (this.#closed) return Promise.reject(new StoreUnavailableError('MongoDB store is closed'));
    this.#settingUp ??= this.#bounded(this.#setUp(), 'set-up', SETUP_TIMEOUT_MS).then(
      (setup) => {
        this.#setup = setup;
        this.#settingUp = undefined;
        clearTimeout(this.#retryTimer);
        void this.#countLegacy(setup);
        return setup;
      },
      (error: unknown) => {
        this.#settingUp = undefined;
        const failure = this.#storeError(error);
        this.#problem(failure.message);
        this.#scheduleRetry();
        throw failure;
      },
    );
    return this.#bounded(this.#settingUp, 'set-up');
  }

  /** The database and the kinds' collections, once set up: for the cluster feed and leases (src/cluster). */
  async cluster(): Promise<{ db: Db; kinds: Setup['kinds'] }> {
    const setup = await this.ready();
    return { db: this.#client.db(this.#databaseName), kinds: setup.kinds };
  }

  /** Resolves when the background work after set-up is done: for tests. */
  settled(): Promise<void> {
    return this.#legacyCount ?? Promise.resolve();
  }

  #countLegacy(setup: Setup): Promise<void> {
    this.#legacyCount = countLegacyDocumentsOnce(this.#client.db(this.#databaseName), setup.kinds, setup.summary).then(
      (count) => {
        if (count > 0) this.#log.info(`MongoDB store: counted ${count} documents of the original service as pack "default"`);
      },
      (error: unknown) => {
        if (this.#closed) return;
        this.#log.warn(`MongoDB store: counting the original service's documents failed, retrying: ${this.#storeError(error).message}`);
        const timer = setTimeout(() => void this.#countLegacy(setup), this.#retryIntervalMs);
        timer.unref();
      },
    );
    return this.#legacyCount;
  }

  async #setUp(): Promise<Setup> {
    // Explicitly: after a failed first connection the driver's topology stays closed ("Topology is
    // closed") until connect() is called again; once connected, it reconnects by itself.
    await this.#client.connect();
    const db = this.#client.db(this.#databaseName);
    const replicaSet = await isReplicaSet(db);
    const writeConcern = replicaSet ? { w: 'majority' as const, wtimeoutMS: this.#operationTimeoutMs } : undefined;
    const setup = await setUp(db, { retentionDays: this.#retentionDays, writeConcern }, replicaSet);
    if (this.#closed) throw new StoreUnavailableError('MongoDB store is closed');
    if (this.#timeseriesPaths) for (const kind of KIND_NAMES) setup.kinds[kind].timeseries = true;
    for (const note of setup.notes) this.#log.info(`MongoDB store: ${note}`);
    await this.#removeImplausible(setup);
    this.#log.info(
      `MongoDB store ready at ${this.#where}, database ${this.#databaseName}: mode ${setup.mode}, ` +
        `retention ${setup.retention === 'expiry' ? 'by expiry and the hourly delete' : setup.retention === 'none' ? 'off' : 'by the hourly delete'}, ` +
        `aggregation ${setup.serverAggregation ? 'on the server' : 'in the store'}, ` +
        `write concern ${replicaSet ? 'majority' : 'server default (not a replica set)'}`,
    );
    this.#lastProblem = undefined;
    return setup;
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.ready().catch(() => undefined);
    }, this.#retryIntervalMs);
    this.#retryTimer.unref();
  }

  /** Logs a problem once, not on every failing call. */
  #problem(message: string): void {
    if (message === this.#lastProblem) return;
    this.#lastProblem = message;
    this.#log.warn(`${message}; retrying`);
  }

  async write(requests: readonly RecordBatch[]): Promise<WriteOutcome[]> {
    const outcomes: (WriteOutcome | undefined)[] = new Array(requests.length);
    const byKind = new Map<KindName, number[]>();
    requests.forEach((request, index) => {
      const problem = batchProblem(request);
      if (problem !== undefined) outcomes[index] = { ok: false, error: problem };
      else {
        const indexes = byKind.get(request.kind);
        if (indexes === undefined) byKind.set(request.kind, [index]);
        else indexes.push(index);
      }
    });
    if (byKind.size > 0) {
      const setup = await this.ready();
      // One insertMany per kind, kinds in parallel; a kind that fails fails only its own requests.
      await Promise.all(
        [...byKind].map(async ([kind, indexes]) => {
          // While the kind's pack counts are recounted, its writes wait (see #recount); checked again
          // after each wait, so that a write is either held back or in #writing when a recount starts.
          for (let recount = this.#recounting.get(kind); recount !== undefined; recount = this.#recounting.get(kind)) await recount;
          const writing = this.#writeKind(
            setup,
            kind,
            indexes.map((i) => requests[i]!),
          ).catch((error: unknown) => indexes.map((): WriteOutcome => ({ ok: false, error: this.#writeError(error) })));
          this.#writing.add(writing);
          const kindOutcomes = await writing.finally(() => this.#writing.delete(writing));
          indexes.forEach((requestIndex, i) => (outcomes[requestIndex] = kindOutcomes[i]));
        }),
      );
    }
    return outcomes as WriteOutcome[];
  }

  /**
   * One kind's insert, at a write position (`written_at`, cluster/write-floor.ts) held until it
   * answers: the cluster feed reads other instances' records by it.
   */
  async #writeKind(setup: Setup, kind: KindName, requests: RecordBatch[]): Promise<WriteOutcome[]> {
    const position = this.writeFloor.stamp();
    let doubtful = true;
    try {
      const outcomes = await this.#writeKindAt(setup, kind, requests, position);
      doubtful = outcomes.some((outcome) => !outcome.ok && outcome.error instanceof StoreUnavailableError);
      return outcomes;
    } finally {
      this.writeFloor.release(position, doubtful);
    }
  }

  async #writeKindAt(setup: Setup, kind: KindName, requests: RecordBatch[], position: number): Promise<WriteOutcome[]> {
    const { collection, timeseries } = setup.kinds[kind];
    const ids: ObjectId[][] = requests.map(() => []);
    // Per request, the records this write does not store because their key is stored already.
    const existing: number[][] = requests.map(() => []);
    const docs: RecordDocument[] = [];
    /** Per document: its request, and its record's index in that request. */
    const owner: number[] = [];
    const ownerRecord: number[] = [];
    const seenKeys = new Set<string>();
    requests.forEach((batch, r) => {
      for (let i = 0; i < batch.length; i++) {
        const key = batch.key(i);
        if (key === undefined) {
          const id = unkeyedIdOf(batch, i);
          ids[r]!.push(id);
          docs.push(toDocument(batch, i, id));
          owner.push(r);
          ownerRecord.push(i);
          continue;
        }
        const id = idForKey(key);
        ids[r]!.push(id);
        // The same key twice in one write: stored once, both answer its id.
        if (seenKeys.has(key)) {
          existing[r]!.push(i);
          continue;
        }
        seenKeys.add(key);
        docs.push(toDocument(batch, i, id));
        owner.push(r);
        ownerRecord.push(i);
      }
    });
    // Its rows in the order they were submitted: the feed hands on equal timestamps in that order.
    docs.forEach((doc, row) => {
      doc.written_at = position;
      doc.written_row = row;
    });
    let toInsert = docs;
    let toInsertOwner = owner;
    let toInsertRecord = ownerRecord;
    const retried = new Set(requests.filter((batch) => attempted.has(batch)));
    for (const batch of requests) attempted.add(batch);
    if (timeseries && (seenKeys.size > 0 || retried.size > 0)) {
      // No unique index on a time-series collection: skip keys already stored, and the unkeyed
      // records of a batch written before that are stored (by that write, never acknowledged). Two
      // instances writing the same key at the same moment can still both store it; resends come one
      // after another.
      const stored = seenKeys.size === 0 ? new Set<string>() : await this.#storedKeys(collection, docs.filter((doc) => doc.key !== undefined));
      const again = docs.filter((doc, d) => doc.key === undefined && retried.has(requests[owner[d]!]!)).map((doc) => doc._id);
      const storedBefore = again.length === 0 ? new Set<string>() : await this.#storedIds(collection, again, false);
      const keep = docs.map((doc) => (doc.key === undefined ? !storedBefore.has(doc._id.toHexString()) : !stored.has(doc.key)));
      keep.forEach((kept, d) => kept || docs[d]!.key === undefined || existing[owner[d]!]!.push(ownerRecord[d]!));
      toInsert = docs.filter((_, i) => keep[i]);
      toInsertOwner = owner.filter((_, i) => keep[i]);
      toInsertRecord = ownerRecord.filter((_, i) => keep[i]);
    }

    /** Per request that failed: why, and the records the server refused (ascending once sorted). */
    const failedRequests = new Map<number, { message: string; reason: RefusalReason | 'outage'; rows: number[] }>();
    const notInserted = new Set<number>();
    if (toInsert.length > 0) {
      try {
        await this.#bounded(collection.insertMany(toInsert, { ordered: false }), 'insert');
      } catch (error) {
        const writeErrors = bulkWriteErrors(error);
        if (writeErrors === undefined) throw error;
        const duplicates = writeErrors.filter(({ index, code }) => code === 11000 && toInsert[index] !== undefined);
        const stored = duplicates.length === 0 ? new Set<string>() : await this.#storedIds(collection, duplicates.map(({ index }) => toInsert[index]!._id));
        for (const { index, code, message } of writeErrors) {
          // 11000 on a document whose id is stored: a keyed one's key is stored already (its id is
          // the same); an unkeyed one was stored by an earlier attempt of its batch (unkeyedIdOf),
          // which counts as this write's. Not stored: another unique index refused it.
          if (code === 11000 && stored.has(toInsert[index]!._id.toHexString())) {
            if (toInsert[index]!.key === undefined) continue;
            notInserted.add(index);
            existing[toInsertOwner[index]!]!.push(toInsertRecord[index]!);
            continue;
          }
          notInserted.add(index);
          const r = toInsertOwner[index]!;
          const reason = OUTAGE_CODES.has(code) ? 'outage' : refusalReasonOf(code);
          const failure = failedRequests.get(r) ?? { message: `${KINDS[kind].collection}: ${this.#redact(message)}`, reason, rows: [] };
          failedRequests.set(r, failure);
          if (reason === 'outage') failure.reason = 'outage';
          failure.rows.push(toInsertRecord[index]!);
        }
      }
    }

    if (failedRequests.size > 0) {
      // All or nothing as far as the server allows: take back what the failed requests did store.
      const orphans = toInsert.filter((_, i) => !notInserted.has(i) && failedRequests.has(toInsertOwner[i]!)).map((doc) => doc._id);
      if (orphans.length > 0) {
        await this.#bounded(collection.deleteMany({ _id: { $in: orphans } }), 'delete').catch((error: unknown) =>
          this.#log.warn(`MongoDB store: could not take back part of a failed request: ${this.#storeError(error).message}`),
        );
      }
    }

    const counts = new Map<string, { count: number; lastSeen: number }>();
    toInsert.forEach((doc, i) => {
      if (notInserted.has(i) || failedRequests.has(toInsertOwner[i]!)) return;
      const seen = counts.get(doc.battery_id);
      if (seen === undefined) counts.set(doc.battery_id, { count: 1, lastSeen: doc.timestamp });
      else {
        seen.count++;
        if (doc.timestamp > seen.lastSeen) seen.lastSeen = doc.timestamp;
      }
    });
    if (this.onWritten !== undefined) {
      const written = toInsert.filter((_, i) => !notInserted.has(i) && !failedRequests.has(toInsertOwner[i]!));
      if (written.length > 0) this.onWritten(kind, written);
    }
    // The records are durable: answer now. The counts follow, coalesced (mongodb-summary.ts).
    if (counts.size > 0) this.#summary.add(kind, counts);

    return requests.map((_, r): WriteOutcome => {
      const failure = failedRequests.get(r);
      if (failure !== undefined) {
        const { message, reason, rows } = failure;
        const error =
          reason === 'outage'
            ? new StoreUnavailableError(`MongoDB store unavailable at ${this.#where}: ${message}`)
            : new RecordRefusedError(`MongoDB store refused a record: ${message}`, reason, rows.sort((a, b) => a - b));
        return { ok: false, error };
      }
      // Indexes were gathered in the order the server reported them.
      return { ok: true, ids: ids[r]!.map((id) => id.toHexString()), existing: existing[r]!.sort((a, b) => a - b) };
    });
  }

  async #storedKeys(collection: KindCollection['collection'], keyed: RecordDocument[]): Promise<Set<string>> {
    let min = Infinity;
    let max = -Infinity;
    for (const doc of keyed) {
      min = Math.min(min, doc.timestamp);
      max = Math.max(max, doc.timestamp);
    }
    const filter: Filter<Document> = {
      battery_id: { $in: [...new Set(keyed.map((doc) => doc.battery_id))] },
      [TIME_FIELD]: { $gte: dateOf(min), $lte: dateOf(max) },
      key: { $in: keyed.map((doc) => doc.key!) },
    };
    const found = await this.#bounded(collection.find(filter, { projection: { key: 1 } }).toArray(), 'key look-up');
    return new Set(found.map((doc) => String(doc.key)));
  }

  /**
   * Start-up repair, part of the set-up, so it has run before anything is read or written: records
   * stamped outside the time the API accepts (MIN_TIMESTAMP..MAX_TIMESTAMP, 2000 to 2100), stored
   * before that bound existed, are removed, their packs recounted, and how many is logged once with
   * the bounds. Such a record (a device sending 1e300) owned "latest" for good and retention never
   * reached it. Removed rather than moved aside: no API could read them back, and a time like that
   * is a broken clock, not a reading worth keeping. Servers that refuse deletes on time-series
   * collections keep them (noted in the log); there, reads find the newest by the time field, which
   * such a record does not lead.
   */
  async #removeImplausible(setup: Setup): Promise<void> {
    const outside = { $or: [{ timestamp: { $lt: MIN_TIMESTAMP } }, { timestamp: { $gt: MAX_TIMESTAMP } }] };
    let removed = 0;
    for (const kind of KIND_NAMES) {
      const { collection, timeseries } = setup.kinds[kind];
      const groups = await collection.aggregate<{ _id: unknown }>([{ $match: outside }, { $group: { _id: '$battery_id' } }]).toArray();
      if (groups.length === 0) continue;
      try {
        removed += (await collection.deleteMany(outside)).deletedCount;
      } catch (error) {
        if (!(timeseries && serverRefused(error))) throw error;
        this.#log.warn(`MongoDB store: the server refuses deletes on ${KINDS[kind].collection}: records stamped outside 2000-2100 stay`);
        continue;
      }
      const packs = new Set(groups.map((group) => (typeof group._id === 'string' ? group._id : DEFAULT_BATTERY_ID)));
      // The records are gone; a recount that fails now is done in the background later.
      await this.#recount(kind, packs, setup).catch(() =>
        this.#markForRecount([...packs].map((batteryId) => ({ batteryId, kind, count: 0, lastSeen: 0 }))),
      );
    }
    if (removed > 0) {
      const iso = (seconds: number) => new Date(seconds * 1000).toISOString();
      this.#log.warn(
        `MongoDB store: removed ${removed} records stamped before ${iso(MIN_TIMESTAMP)} or after ${iso(MAX_TIMESTAMP)} ` +
          `(stored before timestamps were bounded); their packs' counts recounted`,
      );
    }
  }

  #markForRecount(lost: readonly SummaryIncrement[]): void {
    for (const { batteryId, kind } of lost) {
      let packs = this.#toRecount.get(kind);
      if (packs === undefined) this.#toRecount.set(kind, (packs = new Set()));
      packs.add(batteryId);
    }
    this.#scheduleRecount();
  }

  #scheduleRecount(): void {
    if (this.#closed || this.#recountTimer !== undefined || this.#recountRun !== undefined || this.#toRecount.size === 0) return;
    this.#recountTimer = setTimeout(() => {
      this.#recountTimer = undefined;
      this.#recountRun = this.#recountAll().finally(() => {
        this.#recountRun = undefined;
        this.#scheduleRecount();
      });
    }, this.#retryIntervalMs);
    this.#recountTimer.unref();
  }

  /**
   * Heals the counts a lost summary update left low (an outage between a write and its update):
   * the packs concerned are recounted from their records, in the background, once the server
   * answers again; while it does not, they stay marked and are tried again every retry interval.
   * Never rejects.
   */
  async #recountAll(): Promise<void> {
    for (const kind of [...this.#toRecount.keys()]) {
      const packs = this.#toRecount.get(kind)!;
      this.#toRecount.delete(kind);
      try {
        await this.#recount(kind, packs);
        this.#log.info(`MongoDB store: recounted the ${KINDS[kind].collection} records of ${packs.size} packs after a lost summary update`);
      } catch (error) {
        if (this.#closed) return;
        // Marked again (with whatever was marked meanwhile), for the next attempt.
        const marked = this.#toRecount.get(kind);
        if (marked === undefined) this.#toRecount.set(kind, packs);
        else for (const pack of packs) marked.add(pack);
        this.#problem(`MongoDB store: could not recount pack summaries yet: ${this.#storeError(error).message}`);
        return;
      }
    }
  }

  /**
   * Replaces the counts of `packs` by a count of their records, in one aggregation and one bulk
   * update. Exact on this instance: meanwhile the kind's writes wait (a few round trips, after an
   * outage only), after the writes in flight have put their counts in the queue and the queue has
   * gone out, so no record is both in the recount and in a count still on its way. A count another
   * instance has on its way while this runs is counted twice.
   */
  async #recount(kind: KindName, packs: ReadonlySet<string>, during?: Setup): Promise<void> {
    let done!: () => void;
    this.#recounting.set(kind, new Promise<void>((resolve) => (done = resolve)));
    try {
      // `during`: called by the set-up itself, before ready() can answer, so before any write (and
      // any count on its way, whose update would wait for the set-up).
      if (during === undefined) {
        await Promise.allSettled([...this.#writing]);
        await this.#summary.flush();
      }
      const setup = during ?? (await this.ready());
      const ids = [...packs];
      // The original service's documents have no battery_id and count as "default" (batteryFilter).
      const match = ids.includes(DEFAULT_BATTERY_ID) ? [...ids, null] : ids;
      const { collection } = setup.kinds[kind];
      // A server without $max in $group (FerretDB) is asked for each pack's newest record apart.
      const group: Document = { _id: '$battery_id', count: { $sum: 1 } };
      if (setup.serverAggregation) group.newest = { $max: '$timestamp' };
      const groups = await this.#bounded(
        collection.aggregate<{ _id: unknown; count: number; newest?: unknown }>([{ $match: { battery_id: { $in: match } } }, { $group: group }]).toArray(),
        'recount',
      );
      const counted = new Map<string, { count: number; newest: number }>();
      for (const { _id, count, newest } of groups) {
        const batteryId = typeof _id === 'string' ? _id : DEFAULT_BATTERY_ID;
        const seen = counted.get(batteryId) ?? { count: 0, newest: -Infinity };
        seen.count += Number(count);
        if (newest !== undefined) seen.newest = Math.max(seen.newest, Number(newest));
        counted.set(batteryId, seen);
      }
      if (!setup.serverAggregation) {
        for (const [batteryId, seen] of counted) {
          const newest = await this.#bounded(
            collection.findOne(batteryFilter(batteryId), { sort: { timestamp: -1 }, projection: { _id: 0, timestamp: 1 } }),
            'recount',
          );
          seen.newest = Number(newest?.timestamp ?? 0);
        }
      }
      const updates: AnyBulkWriteOperation<SummaryDocument>[] = ids.map((batteryId) => {
        const _id = summaryId(batteryId, kind);
        const found = counted.get(batteryId);
        if (found === undefined) return { deleteOne: { filter: { _id } } };
        return {
          updateOne: { filter: { _id }, update: { $set: { battery_id: batteryId, kind, count: found.count, last_seen: found.newest } }, upsert: true },
        };
      });
      await this.#bounded(setup.summary.bulkWrite(updates, { ordered: false }), 'recount');
    } finally {
      this.#recounting.delete(kind);
      done();
    }
  }

  /** Which of these ids are stored (the ids of keyed documents a unique index refused). */
  /** The ids stored of `ids`; unanswered: all of them when `assumeStored` (a duplicate's usual reason), else the error. */
  async #storedIds(collection: KindCollection['collection'], ids: ObjectId[], assumeStored = true): Promise<Set<string>> {
    try {
      const found = await this.#bounded(collection.find({ _id: { $in: ids } }, { projection: { _id: 1 } }).toArray(), 'key look-up');
      return new Set(found.map((doc) => (doc._id as ObjectId).toHexString()));
    } catch (error) {
      if (!assumeStored) throw error;
      return new Set(ids.map((id) => id.toHexString()));
    }
  }

  /** One coalesced summary update: an upsert per pack and kind, bounded like every operation. */
  async #writeSummary(increments: SummaryIncrement[]): Promise<void> {
    const setup = await this.ready();
    const updates: AnyBulkWriteOperation<SummaryDocument>[] = increments.map(({ batteryId, kind, count, lastSeen }) => ({
      updateOne: {
        filter: { _id: summaryId(batteryId, kind) },
        update: { $inc: { count }, $max: { last_seen: lastSeen }, $setOnInsert: { battery_id: batteryId, kind } },
        upsert: true,
      },
    }));
    await this.#bounded(setup.summary.bulkWrite(updates, { ordered: false }), 'summary update');
  }

  async latest(kind: KindName, batteryId?: string, source?: string): Promise<StoredRecord | null> {
    const kc = await this.#kind(kind);
    let filter = recordFilter(kind, { batteryId, source });
    if (kc.timeseries) {
      const edge = await this.#timeEdge(kc, filter, 1);
      if (edge === undefined) return null;
      filter = { ...filter, [TIME_FIELD]: { $gte: edge } };
    }
    const doc = await this.#bounded(
      kc.collection.findOne(filter, { sort: { timestamp: -1, _id: -1 }, projection: projectionFor(kind) }),
      'read',
    );
    return doc === null ? null : fromDocument(kind, doc);
  }

  /**
   * On a time-series collection a sort on the `timestamp` measurement reads every bucket in range;
   * a sort on the time field alone is served bucket by bucket from the (battery_id, time) index.
   * So the newest-first reads first find the time of the n-th newest document, then sort exactly
   * only what is at or after it: `time` is `timestamp` rounded down, so that set holds the n newest.
   */
  async #timeEdge(kc: KindCollection, filter: Filter<Document>, n: number): Promise<Date | undefined> {
    const [edge] = await this.#bounded(
      kc.collection.find(filter, { sort: { [TIME_FIELD]: -1 }, projection: { _id: 0, [TIME_FIELD]: 1 } }).skip(n - 1).limit(1).toArray(),
      'read',
    );
    const time: unknown = edge?.[TIME_FIELD];
    return time instanceof Date ? time : undefined;
  }

  async history(kind: KindName, query: HistoryQuery): Promise<StoredRecord[]> {
    const since = finite('since', query.since);
    const limit = Math.floor(finite('limit', query.limit));
    const kc = await this.#kind(kind);
    // limit(0) means no limit to MongoDB.
    if (limit <= 0) return [];
    let filter = { ...recordFilter(kind, query), ...timeRange(kc, since, undefined) };
    if (kc.timeseries) {
      // Fewer than `limit` documents in the window: the window itself is the bound.
      const edge = await this.#timeEdge(kc, filter, limit);
      if (edge !== undefined) filter = { ...filter, [TIME_FIELD]: { $gte: edge } };
    }
    const docs = await this.#bounded(
      kc.collection
        .find(filter, { sort: { timestamp: -1, _id: -1 }, projection: projectionFor(kind), allowDiskUse: kc.timeseries || undefined })
        .limit(limit)
        .toArray(),
      'read',
    );
    return docs.map((doc) => fromDocument(kind, doc));
  }

  async aggregate(kind: KindName, query: AggregateQuery): Promise<AggregateBucket[]> {
    const from = finite('from', query.from);
    const to = finite('to', query.to);
    const width = finite('bucketSeconds', query.bucketSeconds);
    if (width <= 0) throw new TypeError('bucketSeconds must be positive');
    const setup = await this.ready();
    const kc = setup.kinds[kind];
    const fields = aggregatedFields(kind);
    const filter = { ...recordFilter(kind, query), ...timeRange(kc, from, to) };
    if (setup.serverAggregation) {
      const rows = await this.#bounded(
        kc.collection.aggregate<Document>([{ $match: filter }, { $group: bucketGroup(from, width, fields) }, { $sort: { _id: 1 } }], { allowDiskUse: true }).toArray(),
        'aggregate',
      );
      return rows.map((row) => {
        const count = Number(row.count);
        const bucket: AggregateBucket = { start: Number(row._id), count, min: {}, max: {}, mean: {} };
        for (const { name: f, alwaysStored } of fields) {
          const n = alwaysStored ? count : Number(row[`n_${f}`] ?? 0);
          if (n === 0) continue;
          bucket.min[f] = Number(row[`min_${f}`]);
          bucket.max[f] = Number(row[`max_${f}`]);
          bucket.mean[f] = Number(row[`sum_${f}`]) / n;
        }
        return bucket;
      });
    }
    return this.#bounded(this.#reduce(kc, filter, from, width, fields), 'aggregate');
  }

  /** aggregate() for servers without $group expressions: the same arithmetic over a projected cursor. */
  async #reduce(kc: KindCollection, filter: Filter<Document>, from: number, width: number, fields: readonly RecordField[]): Promise<AggregateBucket[]> {
    const projection: Document = { _id: 0, timestamp: 1 };
    for (const { name } of fields) projection[name] = 1;
    const buckets = new Map<number, { count: number; min: number[]; max: number[]; sum: number[]; n: number[] }>();
    const cursor = kc.collection.find(filter, { projection, batchSize: AGGREGATE_SCAN_BATCH });
    try {
      for await (const doc of cursor) {
        const t = Number(doc.timestamp);
        const start = from + Math.floor((t - from) / width) * width;
        let bucket = buckets.get(start);
        if (bucket === undefined) {
          bucket = { count: 0, min: fields.map(() => Infinity), max: fields.map(() => -Infinity), sum: fields.map(() => 0), n: fields.map(() => 0) };
          buckets.set(start, bucket);
        }
        bucket.count++;
        for (let i = 0; i < fields.length; i++) {
          const stored: unknown = doc[fields[i]!.name];
          // A field the record lacks ($min and $max pass over it too).
          if (stored === undefined || stored === null) continue;
          const v = Number(stored);
          if (!Number.isFinite(v)) continue;
          if (v < bucket.min[i]!) bucket.min[i] = v;
          if (v > bucket.max[i]!) bucket.max[i] = v;
          bucket.sum[i]! += v;
          bucket.n[i]! += 1;
        }
      }
    } finally {
      await cursor.close().catch(() => undefined);
    }
    return [...buckets]
      .sort(([a], [b]) => a - b)
      .map(([start, b]) => {
        const bucket: AggregateBucket = { start, count: b.count, min: {}, max: {}, mean: {} };
        fields.forEach(({ name: f, alwaysStored }, i) => {
          const n = alwaysStored ? b.count : b.n[i]!;
          if (n === 0) return;
          bucket.min[f] = b.min[i]!;
          bucket.max[f] = b.max[i]!;
          bucket.mean[f] = b.sum[i]! / n;
        });
        return bucket;
      });
  }

  async *exportRange(kind: KindName, query: RangeQuery): AsyncIterable<StoredRecord> {
    const from = finite('from', query.from);
    const to = finite('to', query.to);
    const kc = await this.#kind(kind);
    const filter: Filter<Document> = { ...recordFilter(kind, query), ...timeRange(kc, from, to) };
    if (query.writtenBefore !== undefined) {
      const { position, inclusive } = query.writtenBefore;
      filter.written_at = { $not: { [inclusive ? '$gt' : '$gte']: position } };
    }
    const cursor = kc.collection.find(filter, {
      sort: { timestamp: 1, _id: 1 },
      projection: projectionFor(kind),
      batchSize: EXPORT_BATCH,
      allowDiskUse: kc.timeseries || undefined,
    });
    try {
      for (let first = true; ; first = false) {
        // Each batch is bounded; the consumer's own pace between batches is not. The first runs the
        // sorted range query itself, which a slow server (FerretDB on a busy machine: over 10 s for
        // 70,000 documents) needs longer for than one batch.
        const doc = await this.#bounded(cursor.next(), 'export', first ? EXPORT_FIRST_BATCH_TIMEOUT_MS : undefined);
        if (doc === null) return;
        yield fromDocument(kind, doc);
      }
    } finally {
      await cursor.close().catch(() => undefined);
    }
  }

  async batteries(): Promise<BatterySummary[]> {
    const setup = await this.ready();
    // Counts of writes this instance has answered are still on their way: send them first.
    await this.#summary.flush();
    const rows = await this.#bounded(setup.summary.find({ count: { $gt: 0 } }).toArray(), 'read');
    const byId = new Map<string, BatterySummary>();
    for (const row of rows) {
      if (!(KIND_NAMES as readonly string[]).includes(row.kind)) continue;
      const batteryId = typeof row.battery_id === 'string' ? row.battery_id : DEFAULT_BATTERY_ID;
      const lastSeen = Number(row.last_seen);
      let summary = byId.get(batteryId);
      if (summary === undefined) {
        summary = {
          battery_id: batteryId,
          last_seen: lastSeen,
          counts: Object.fromEntries(KIND_NAMES.map((kind) => [kind, 0])) as Record<KindName, number>,
          last_seen_by_kind: {},
        };
        byId.set(batteryId, summary);
      }
      summary.counts[row.kind] += Number(row.count);
      summary.last_seen_by_kind[row.kind] = Math.max(summary.last_seen_by_kind[row.kind] ?? -Infinity, lastSeen);
      summary.last_seen = Math.max(summary.last_seen, lastSeen);
    }
    return [...byId.values()].sort((a, b) => (a.battery_id < b.battery_id ? -1 : a.battery_id > b.battery_id ? 1 : 0));
  }

  /**
   * Deletes pack by pack, so each pack's count goes down by exactly what was deleted. Servers before
   * MongoDB 7.0 refuse such deletes on time-series collections; their expiry does the work there.
   */
  async deleteOlderThan(cutoff: number): Promise<number> {
    finite('cutoff', cutoff);
    const setup = await this.ready();
    // Increments still waiting must land before the decrements: a pack whose count went to zero or
    // below here is removed, and a late increment would then recreate it counting deleted records.
    await this.#summary.flush();
    let deleted = 0;
    for (const kind of KIND_NAMES) {
      const kc = setup.kinds[kind];
      const old = timeRange(kc, undefined, cutoff);
      const groups = await this.#bounded(
        kc.collection.aggregate<{ _id: unknown }>([{ $match: old }, { $group: { _id: '$battery_id', n: { $sum: 1 } } }]).toArray(),
        'retention',
      );
      const decrements = new Map<string, number>();
      for (const group of groups) {
        let result;
        try {
          result = await this.#bounded(kc.collection.deleteMany({ battery_id: group._id ?? null, ...old }), 'retention');
        } catch (error) {
          if (kc.timeseries && serverRefused(error)) {
            this.#log.warn(`MongoDB store: the server refuses deletes on ${KINDS[kind].collection}; its expiry removes old data`);
            break;
          }
          throw this.#storeError(error);
        }
        const batteryId = typeof group._id === 'string' ? group._id : DEFAULT_BATTERY_ID;
        decrements.set(batteryId, (decrements.get(batteryId) ?? 0) + result.deletedCount);
        deleted += result.deletedCount;
      }
      const updates: AnyBulkWriteOperation<SummaryDocument>[] = [...decrements]
        .filter(([, n]) => n > 0)
        .map(([batteryId, n]) => ({ updateOne: { filter: { _id: summaryId(batteryId, kind) }, update: { $inc: { count: -n } } } }));
      if (updates.length > 0) await this.#bounded(setup.summary.bulkWrite(updates, { ordered: false }), 'retention');
    }
    await this.#bounded(setup.summary.deleteMany({ count: { $lte: 0 } }), 'retention');
    return deleted;
  }

  async health(): Promise<StoreHealth> {
    try {
      const setup = await this.ready();
      await this.#bounded(this.#client.db(this.#databaseName).command({ ping: 1 }), 'ping');
      return { ok: true, store: 'mongodb', mode: setup.mode };
    } catch (error) {
      const health: StoreHealth = { ok: false, store: 'mongodb', error: this.#storeError(error).message };
      if (this.#setup !== undefined) health.mode = this.#setup.mode;
      return health;
    }
  }

  async close(): Promise<void> {
    // The counts of answered writes go out before the connection does (each update is bounded).
    await this.#summary.close();
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#recountTimer);
    await this.#recountRun;
    await this.#client.close();
  }

  async #kind(kind: KindName): Promise<KindCollection> {
    if (!(KIND_NAMES as readonly string[]).includes(kind)) throw new TypeError(`unknown kind ${String(kind)}`);
    return (await this.ready()).kinds[kind];
  }

  /** Bounds an operation in time; a late driver answer is dropped. Driver errors become store errors. */
  #bounded<T>(operation: Promise<T>, what: string, timeoutMs = this.#operationTimeoutMs): Promise<T> {
    return withDeadline(operation, timeoutMs, () => new StoreUnavailableError(`MongoDB store: ${what} got no answer within ${timeoutMs} ms`))
      .catch((error: unknown) => {
        // Bulk write errors carry per-document outcomes; the caller reads them.
        if ((error as Error)?.name === 'MongoBulkWriteError' && bulkWriteErrors(error) !== undefined) throw error;
        if ((error as Error)?.name === 'MongoTopologyClosedError' && !this.#closed) this.#client.connect().catch(() => undefined);
        throw this.#storeError(error);
      });
  }

  /** A failed write as the store reports it: an outage, or the server's refusal of what was sent. */
  #writeError(error: unknown): Error {
    const failure = this.#storeError(error);
    if (failure instanceof StoreUnavailableError) return failure;
    // A driver that cannot encode a document (BSON) throws before sending.
    const e = error as { code?: unknown; name?: unknown };
    const encoding = e?.name === 'BSONError' || error instanceof RangeError || error instanceof TypeError;
    return new RecordRefusedError(failure.message, encoding ? 'invalid_value' : refusalReasonOf(typeof e?.code === 'number' ? e.code : undefined), []);
  }

  /**
   * A driver error as this store reports it, secrets removed: StoreUnavailableError when the server
   * is away or refuses to serve (the API's 503), a plain Error for a server's refusal of this
   * particular operation.
   */
  #storeError(error: unknown): Error {
    if (error instanceof StoreUnavailableError) return error;
    if (error instanceof TypeError) return error;
    const e = error as Error & { code?: unknown; errorLabels?: string[] };
    const message = this.#redact(String(e?.message ?? error));
    if (this.#closed) return new StoreUnavailableError(`MongoDB store is closed: ${message}`);
    if (isOutage(e)) return new StoreUnavailableError(`MongoDB store unavailable at ${this.#where}: ${message}`);
    return new Error(`MongoDB store: ${message}`);
  }
}

/** Why the server refused a document, by its error code. */
function refusalReasonOf(code: number | undefined): RefusalReason {
  if (code === undefined) return 'store_refused';
  if (DUPLICATE_KEY_CODES.has(code)) return 'duplicate_key';
  // DocumentValidationFailure: a collection validator.
  if (code === 121) return 'constraint';
  if (INVALID_VALUE_CODES.has(code)) return 'invalid_value';
  return 'store_refused';
}

const DUPLICATE_KEY_CODES = new Set([11000, 11001, 12582]);
/** BadValue, FailedToParse, TypeMismatch, InvalidBSON, field names, BSONObjectTooLarge, KeyTooLong. */
const INVALID_VALUE_CODES = new Set([2, 9, 14, 22, 52, 55, 56, 57, 10334, 17280]);

/** The documents a bulk insert refused, when it got that far; undefined for any other error. */
function bulkWriteErrors(error: unknown): { index: number; code: number; message: string }[] | undefined {
  const e = error as { name?: string; writeErrors?: unknown; writeConcernError?: unknown; result?: { getWriteConcernError?(): unknown } };
  if (e?.name !== 'MongoBulkWriteError') return undefined;
  // Written but not acknowledged as durable: not a per-document outcome.
  if (e.writeConcernError !== undefined && e.writeConcernError !== null) return undefined;
  if (e.result?.getWriteConcernError?.() !== undefined && e.result?.getWriteConcernError?.() !== null) return undefined;
  const list = e.writeErrors === undefined ? [] : Array.isArray(e.writeErrors) ? e.writeErrors : [e.writeErrors];
  if (list.length === 0) return undefined;
  return list.map((w: { index: number; code: number; errmsg?: string; message?: string }) => ({
    index: w.index,
    code: w.code,
    message: w.errmsg ?? w.message ?? `error ${w.code}`,
  }));
}

/**
 * Server errors that mean "not now" rather than "not this": unreachable hosts and timeouts (6, 7,
 * 50, 89, 202, 262, 9001), shutdown and failover (91, 189, 10107, 10058, 11600, 11602, 13435, 13436),
 * auth (11, 13, 18), stale routing (63, 150, 13388), read preference and concern (133, 134),
 * write concern (64), lock and write conflicts (24, 46, 112), Atlas (8000), and the request rate
 * of Cosmos DB (16500).
 */
const OUTAGE_CODES = new Set([
  6, 7, 11, 13, 18, 24, 46, 50, 63, 64, 89, 91, 112, 133, 134, 150, 189, 202, 262, 8000, 9001, 10058, 10107, 11600, 11602, 13388, 13435,
  13436, 16500,
]);

const OUTAGE_ERRORS = new Set([
  'MongoNetworkError',
  'MongoNetworkTimeoutError',
  'MongoServerSelectionError',
  'MongoTopologyClosedError',
  'MongoClientClosedError',
  'MongoNotConnectedError',
  'MongoServerClosedError',
  'MongoOperationTimeoutError',
  'MongoStalePrimaryError',
  'MongoWriteConcernError',
  'MongoPoolClosedError',
  'MongoPoolClearedError',
  'PoolClearedOnNetworkError',
  'MongoWaitQueueTimeoutError',
]);

function isOutage(error: Error & { code?: unknown; errorLabels?: string[] }): boolean {
  if (OUTAGE_ERRORS.has(error?.name)) return true;
  // insertMany and bulkWrite wrap a lost connection, and an unacknowledged write concern, in a bulk
  // write error that carries no per-document errors.
  if (error?.name === 'MongoBulkWriteError' && bulkWriteErrors(error) === undefined) {
    return error.code === undefined || (typeof error.code === 'number' && OUTAGE_CODES.has(error.code));
  }
  const labels = Array.isArray(error?.errorLabels) ? error.errorLabels : [];
  if (labels.includes('RetryableWriteError') || labels.includes('TransientTransactionError')) return true;
  return typeof error?.code === 'number' && OUTAGE_CODES.has(error.code);
}

/**
 * timestamp in [from, to): exact on the float. On a time-series collection the BSON date field is
 * bounded too, which is what lets the server skip whole buckets.
 */
function timeRange(kc: KindCollection, from: number | undefined, to: number | undefined): Filter<Document> {
  const timestamp: Document = {};
  if (from !== undefined) timestamp.$gte = from;
  if (to !== undefined) timestamp.$lt = to;
  const filter: Filter<Document> = { timestamp };
  if (kc.timeseries) {
    const time: Document = {};
    if (from !== undefined) time.$gte = dateOf(from);
    if (to !== undefined) time.$lte = dateOf(to);
    filter[TIME_FIELD] = time;
  }
  return filter;
}

/** The records of a batch the API's validator refuses, before anything is sent; undefined when there are none. */
function batchProblem(batch: RecordBatch): RecordRefusedError | undefined {
  if (!(KIND_NAMES as readonly string[]).includes(batch?.kind)) return new RecordRefusedError(`unknown kind ${String(batch?.kind)}`, 'invalid_value', []);
  let first: string | undefined;
  const rows: number[] = [];
  for (let row = 0; row < batch.length; row++) {
    const problem = recordProblem(batch, row);
    if (problem === undefined) continue;
    first ??= `${batch.kind} record ${row}: ${problem}`;
    rows.push(row);
  }
  return first === undefined ? undefined : new RecordRefusedError(`MongoDB store refused a record: ${first}`, 'invalid_value', rows);
}
