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
 * A write answers after one round trip per kind (the insertMany); the per-pack counts behind
 * batteries() follow after the answer, coalesced across writes (mongodb-summary.ts).
 */
import type { RecordBatch } from '../ingest/record-batch.js';
import { MongoClient, ObjectId, type AnyBulkWriteOperation, type Document, type Filter, type MongoClientOptions } from 'mongodb';
import { DEFAULT_BATTERY_ID, KIND_NAMES, KINDS, fieldNames, type KindName, type StoredRecord } from '../records/kinds.js';
import {
  batteryFilter,
  dateOf,
  finite,
  fromDocument,
  idForKey,
  projectionFor,
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
import {
  StoreUnavailableError,
  type AggregateBucket,
  type AggregateQuery,
  type BatterySummary,
  type HistoryQuery,
  type RangeQuery,
  type Store,
  type StoreHealth,
  type WriteOutcome,
} from './store.js';

/** What the store logs: a pino logger fits, and so does console. */
export interface StoreLogger {
  info(message: string): void;
  warn(message: string): void;
}

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

const DEFAULTS = { serverSelectionTimeoutMs: 2500, operationTimeoutMs: 10_000, retryIntervalMs: 5000, summaryDelayMs: 100 };
/** Packs × kinds whose counts may wait for the next summary update before it goes at once. */
const MAX_PENDING_SUMMARY = 10_000;
/** Set-up builds indexes, which on a large existing collection takes minutes, not seconds. */
const SETUP_TIMEOUT_MS = 10 * 60_000;
const EXPORT_BATCH = 1000;
const AGGREGATE_SCAN_BATCH = 5000;
const SILENT: StoreLogger = { info() {}, warn() {} };

export async function openMongoStore(options: MongoStoreOptions): Promise<MongoStore> {
  const store = new MongoStore(options);
  // One bounded attempt, so that a healthy start logs its mode before serving; a failed one is
  // retried in the background and does not stop the service from starting.
  await store.ready().catch(() => undefined);
  return store;
}

export class MongoStore implements Store {
  readonly name = 'mongodb';
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
      failed: (error, lost) =>
        this.#log.warn(
          `MongoDB store: pack summary not updated, counts of ${lost.length} pack/kind pairs are low by ` +
            `${lost.reduce((n, increment) => n + increment.count, 0)} records: ${this.#storeError(error).message}`,
        ),
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
      if (problem !== undefined) outcomes[index] = { ok: false, error: new Error(problem) };
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
          const kindOutcomes = await this.#writeKind(
            setup,
            kind,
            indexes.map((i) => requests[i]!),
          ).catch((error: unknown) => indexes.map((): WriteOutcome => ({ ok: false, error: this.#storeError(error) })));
          indexes.forEach((requestIndex, i) => (outcomes[requestIndex] = kindOutcomes[i]));
        }),
      );
    }
    return outcomes as WriteOutcome[];
  }

  async #writeKind(setup: Setup, kind: KindName, requests: RecordBatch[]): Promise<WriteOutcome[]> {
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
          const id = new ObjectId();
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
    let toInsert = docs;
    let toInsertOwner = owner;
    let toInsertRecord = ownerRecord;
    if (timeseries && seenKeys.size > 0) {
      // No unique index on a time-series collection: skip keys already stored. Two instances writing
      // the same key at the same moment can still both store it; resends come one after another.
      const stored = await this.#storedKeys(collection, docs.filter((doc) => doc.key !== undefined));
      const keep = docs.map((doc) => doc.key === undefined || !stored.has(doc.key));
      keep.forEach((kept, d) => kept || existing[owner[d]!]!.push(ownerRecord[d]!));
      toInsert = docs.filter((_, i) => keep[i]);
      toInsertOwner = owner.filter((_, i) => keep[i]);
      toInsertRecord = ownerRecord.filter((_, i) => keep[i]);
    }

    const failedRequests = new Map<number, string>();
    const notInserted = new Set<number>();
    if (toInsert.length > 0) {
      try {
        await this.#bounded(collection.insertMany(toInsert, { ordered: false }), 'insert');
      } catch (error) {
        const writeErrors = bulkWriteErrors(error);
        if (writeErrors === undefined) throw error;
        for (const { index, code, message } of writeErrors) {
          notInserted.add(index);
          // 11000 on a keyed document: that key is stored already, and its id is the same.
          if (code === 11000 && toInsert[index]?.key !== undefined) {
            existing[toInsertOwner[index]!]!.push(toInsertRecord[index]!);
            continue;
          }
          const r = toInsertOwner[index]!;
          if (!failedRequests.has(r)) failedRequests.set(r, `${KINDS[kind].collection}: ${this.#redact(message)}`);
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
    // The records are durable: answer now. The counts follow, coalesced (mongodb-summary.ts).
    if (counts.size > 0) this.#summary.add(kind, counts);

    return requests.map((_, r): WriteOutcome => {
      const failure = failedRequests.get(r);
      if (failure !== undefined) return { ok: false, error: new Error(failure) };
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

  async latest(kind: KindName, batteryId?: string): Promise<StoredRecord | null> {
    const kc = await this.#kind(kind);
    let filter = batteryFilter(batteryId);
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
    let filter = { ...batteryFilter(query.batteryId), ...timeRange(kc, since, undefined) };
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
    const fields = fieldNames(kind);
    const filter = { ...batteryFilter(query.batteryId), ...timeRange(kc, from, to) };
    if (setup.serverAggregation) {
      const rows = await this.#bounded(
        kc.collection.aggregate<Document>([{ $match: filter }, { $group: bucketGroup(from, width, fields) }, { $sort: { _id: 1 } }], { allowDiskUse: true }).toArray(),
        'aggregate',
      );
      return rows.map((row) => {
        const count = Number(row.count);
        const bucket: AggregateBucket = { start: Number(row._id), count, min: {}, max: {}, mean: {} };
        for (const f of fields) {
          bucket.min[f] = Number(row[`min_${f}`]);
          bucket.max[f] = Number(row[`max_${f}`]);
          bucket.mean[f] = Number(row[`sum_${f}`]) / count;
        }
        return bucket;
      });
    }
    return this.#bounded(this.#reduce(kc, filter, from, width, fields), 'aggregate');
  }

  /** aggregate() for servers without $group expressions: the same arithmetic over a projected cursor. */
  async #reduce(kc: KindCollection, filter: Filter<Document>, from: number, width: number, fields: string[]): Promise<AggregateBucket[]> {
    const projection: Document = { _id: 0, timestamp: 1 };
    for (const f of fields) projection[f] = 1;
    const buckets = new Map<number, { count: number; min: number[]; max: number[]; sum: number[] }>();
    const cursor = kc.collection.find(filter, { projection, batchSize: AGGREGATE_SCAN_BATCH });
    try {
      for await (const doc of cursor) {
        const t = Number(doc.timestamp);
        const start = from + Math.floor((t - from) / width) * width;
        let bucket = buckets.get(start);
        if (bucket === undefined) {
          bucket = { count: 0, min: fields.map(() => Infinity), max: fields.map(() => -Infinity), sum: fields.map(() => 0) };
          buckets.set(start, bucket);
        }
        bucket.count++;
        for (let i = 0; i < fields.length; i++) {
          const v = Number(doc[fields[i]!]);
          if (!Number.isFinite(v)) continue;
          if (v < bucket.min[i]!) bucket.min[i] = v;
          if (v > bucket.max[i]!) bucket.max[i] = v;
          bucket.sum[i]! += v;
        }
      }
    } finally {
      await cursor.close().catch(() => undefined);
    }
    return [...buckets]
      .sort(([a], [b]) => a - b)
      .map(([start, b]) => {
        const bucket: AggregateBucket = { start, count: b.count, min: {}, max: {}, mean: {} };
        fields.forEach((f, i) => {
          bucket.min[f] = b.min[i]!;
          bucket.max[f] = b.max[i]!;
          bucket.mean[f] = b.sum[i]! / b.count;
        });
        return bucket;
      });
  }

  async *exportRange(kind: KindName, query: RangeQuery): AsyncIterable<StoredRecord> {
    const from = finite('from', query.from);
    const to = finite('to', query.to);
    const kc = await this.#kind(kind);
    const filter = { ...batteryFilter(query.batteryId), ...timeRange(kc, from, to) };
    const cursor = kc.collection.find(filter, {
      sort: { timestamp: 1, _id: 1 },
      projection: projectionFor(kind),
      batchSize: EXPORT_BATCH,
      allowDiskUse: kc.timeseries || undefined,
    });
    try {
      for (;;) {
        // Each batch is bounded; the consumer's own pace between batches is not.
        const doc = await this.#bounded(cursor.next(), 'export');
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
    await this.#client.close();
  }

  async #kind(kind: KindName): Promise<KindCollection> {
    if (!(KIND_NAMES as readonly string[]).includes(kind)) throw new TypeError(`unknown kind ${String(kind)}`);
    return (await this.ready()).kinds[kind];
  }

  /** Bounds an operation in time; a late driver answer is dropped. Driver errors become store errors. */
  #bounded<T>(operation: Promise<T>, what: string, timeoutMs = this.#operationTimeoutMs): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreUnavailableError(`MongoDB store: ${what} got no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([operation, deadline])
      .catch((error: unknown) => {
        // Bulk write errors carry per-document outcomes; the caller reads them.
        if ((error as Error)?.name === 'MongoBulkWriteError' && bulkWriteErrors(error) !== undefined) throw error;
        if ((error as Error)?.name === 'MongoTopologyClosedError' && !this.#closed) this.#client.connect().catch(() => undefined);
        throw this.#storeError(error);
      })
      .finally(() => clearTimeout(timer));
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

/** Server errors that mean "not now" rather than "not this": shutdown, failover, timeouts, auth. */
const OUTAGE_CODES = new Set([
  6, 7, 11, 13, 18, 50, 89, 91, 189, 202, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 133, 134, 8000,
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

function batchProblem(batch: RecordBatch): string | undefined {
  if (!(KIND_NAMES as readonly string[]).includes(batch?.kind)) return `unknown kind ${String(batch?.kind)}`;
  for (let row = 0; row < batch.length; row++) {
    const problem = recordProblem(batch, row);
    if (problem !== undefined) return `${batch.kind} record ${row}: ${problem}`;
  }
  return undefined;
}
