/**
 * What the MongoDB store sets up on first contact with the server, idempotently, and what it learns
 * about the server on the way. Every capability is found out by asking the server (create the
 * collection and look at what came out, try the index, run the pipeline on nothing), never by
 * reading a version number: FerretDB answers buildInfo with 7.0 and has none of them.
 *
 * - Collections: time-series (metaField battery_id, timeField `time`, granularity seconds,
 *   expireAfterSeconds from the retention) when the server makes them; else plain. A database that
 *   already holds a plain collection of ours (the original service's) stays plain throughout, so
 *   one database has one mode.
 * - Retention: time-series expiry, or a TTL index on `time`, or neither (FerretDB): then only the
 *   hourly deleteOlderThan the service runs. Expiry is set a day past the retention so that the
 *   hourly delete, which keeps the per-pack counts right, normally gets there first; expiry is the
 *   backstop for when no instance runs.
 * - Indexes: (battery_id, timestamp, _id) for a pack's latest, history and export, (timestamp, _id)
 *   across packs, (written_at, written_row, _id) for the cluster feed.
 * - The per-pack summary behind batteries(): the original service's documents are counted into it
 *   once per database (countLegacyDocumentsOnce, which the store runs after set-up, in the
 *   background, as it may take a while on a large database).
 */
import type { Collection, Db, Document, IndexDescription, MongoServerError } from 'mongodb';
import { aggregatedFields, ALL_KINDS, KIND_NAMES, type KindName, type RecordField } from '../records/kinds.js';
import { summaryId, TIME_FIELD, type SummaryDocument } from './mongodb-documents.js';

export const SUMMARY_COLLECTION = 'battery_summary';
export const META_COLLECTION = 'battery_store_meta';
/** Expiry runs this long after the retention: see the module comment. */
export const EXPIRY_GRACE_SECONDS = 86_400;
const TTL_INDEX = 'time_ttl';

export type StoreMode = 'timeseries' | 'plain' | 'mixed';

export interface KindCollection {
  collection: Collection<Document>;
  timeseries: boolean;
}

export interface Setup {
  kinds: Record<KindName, KindCollection>;
  summary: Collection<SummaryDocument>;
  mode: StoreMode;
  /** How old data goes: 'expiry' (time-series or TTL index) backed by the hourly delete, or only the latter. */
  retention: 'expiry' | 'hourly-delete' | 'none';
  /** Whether $group takes the bucket expressions; else aggregate() reduces a projected cursor itself. */
  serverAggregation: boolean;
  replicaSet: boolean;
  /** Lines worth a log entry: what was decided and why. */
  notes: string[];
}

export interface SetupOptions {
  retentionDays: number;
  /** Applied to every collection handle (majority on a replica set). */
  writeConcern?: { w: 'majority'; wtimeoutMS: number };
}

const isServerError = (error: unknown): error is MongoServerError =>
  error instanceof Error && error.name === 'MongoServerError';

/** Whether the server answered with an error of its own (as opposed to not answering). */
export const serverRefused = (error: unknown) => isServerError(error) || (error as Error)?.name === 'MongoBulkWriteError';

export async function isReplicaSet(db: Db): Promise<boolean> {
  const hello = await db.admin().command({ hello: 1 });
  return typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
}

export async function setUp(db: Db, options: SetupOptions, replicaSet: boolean): Promise<Setup> {
  const notes: string[] = [];
  const expireAfterSeconds = options.retentionDays > 0 ? options.retentionDays * 86_400 + EXPIRY_GRACE_SECONDS : undefined;
  const handle = <T extends Document>(name: string) =>
    db.collection<T>(name, options.writeConcern === undefined ? {} : { writeConcern: options.writeConcern });

  const existing = new Map<string, Document>();
  for (const info of await db.listCollections({}, { nameOnly: false }).toArray()) existing.set(info.name, info);

  // One mode per database: an existing plain collection (an older deployment's) keeps the rest plain.
  const existingPlain = ALL_KINDS.find((kind) => existing.has(kind.collection) && existing.get(kind.collection)?.type !== 'timeseries');
  let tryTimeseries = existingPlain === undefined;
  if (existingPlain !== undefined) notes.push(`existing plain collection ${existingPlain.collection}: new collections are plain too`);

  const kinds = {} as Record<KindName, KindCollection>;
  let anyExpiry = false;
  let allExpiry = true;
  for (const kind of ALL_KINDS) {
    const name = kind.collection;
    let info = existing.get(name);
    if (info === undefined) {
      info = await createCollection(db, name, tryTimeseries, expireAfterSeconds, notes);
      if (info?.type !== 'timeseries') tryTimeseries = false;
    }
    const timeseries = info?.type === 'timeseries';
    const collection = handle<Document>(name);
    const expiry = timeseries
      ? await setTimeseriesExpiry(db, name, info, expireAfterSeconds, notes)
      : await setTtlIndex(collection, expireAfterSeconds, notes);
    anyExpiry ||= expiry;
    allExpiry &&= expiry;
    await createIndexes(collection, timeseries, notes);
    kinds[kind.name] = { collection, timeseries };
  }

  const modes = new Set(KIND_NAMES.map((kind) => kinds[kind].timeseries));
  const mode: StoreMode = modes.size > 1 ? 'mixed' : modes.has(true) ? 'timeseries' : 'plain';
  const retention = expireAfterSeconds === undefined ? 'none' : anyExpiry && allExpiry ? 'expiry' : 'hourly-delete';
  if (expireAfterSeconds !== undefined && anyExpiry && !allExpiry) notes.push('expiry on some collections only');

  const summary = handle<SummaryDocument>(SUMMARY_COLLECTION);

  const serverAggregation = await probeServerAggregation(kinds['battery-data'].collection, notes);
  return { kinds, summary, mode, retention, serverAggregation, replicaSet, notes };
}

async function createCollection(
  db: Db,
  name: string,
  timeseries: boolean,
  expireAfterSeconds: number | undefined,
  notes: string[],
): Promise<Document | undefined> {
  if (timeseries) {
    try {
      await db.createCollection(name, {
        timeseries: { timeField: TIME_FIELD, metaField: 'battery_id', granularity: 'seconds' },
        ...(expireAfterSeconds === undefined ? {} : { expireAfterSeconds }),
      });
    } catch (error) {
      if (!isServerError(error)) throw error;
      // 48 NamespaceExists: another instance made it first; look at what it made.
      if (error.code !== 48) {
        notes.push(`no time-series collections on this server (${error.codeName ?? error.code}): plain collections`);
        await createPlain(db, name);
      }
    }
  } else {
    await createPlain(db, name);
  }
  const [info] = await db.listCollections({ name }, { nameOnly: false }).toArray();
  return info;
}

async function createPlain(db: Db, name: string): Promise<void> {
  try {
    await db.createCollection(name);
  } catch (error) {
    if (!isServerError(error) || error.code !== 48) throw error;
  }
}

async function setTimeseriesExpiry(
  db: Db,
  name: string,
  info: Document | undefined,
  expireAfterSeconds: number | undefined,
  notes: string[],
): Promise<boolean> {
  const current = (info?.options as Document | undefined)?.expireAfterSeconds as number | undefined;
  if (current === expireAfterSeconds) return current !== undefined;
  try {
    await db.command({ collMod: name, expireAfterSeconds: expireAfterSeconds ?? 'off' });
    return expireAfterSeconds !== undefined;
  } catch (error) {
    if (!isServerError(error)) throw error;
    notes.push(`could not change the expiry of ${name} (${error.message})`);
    return current !== undefined;
  }
}

async function setTtlIndex(collection: Collection<Document>, expireAfterSeconds: number | undefined, notes: string[]): Promise<boolean> {
  if (expireAfterSeconds === undefined) {
    // Retention off: an expiry index left from an earlier setting would still delete data.
    await collection.dropIndex(TTL_INDEX).catch((error: unknown) => {
      if (!isServerError(error)) throw error;
    });
    return false;
  }
  try {
    await collection.createIndex({ [TIME_FIELD]: 1 }, { name: TTL_INDEX, expireAfterSeconds });
    return true;
  } catch (error) {
    if (!isServerError(error)) throw error;
    // 85 IndexOptionsConflict: the index exists with another retention.
    if (error.code === 85) {
      try {
        await collection.db.command({ collMod: collection.collectionName, index: { name: TTL_INDEX, expireAfterSeconds } });
        return true;
      } catch (collModError) {
        if (!isServerError(collModError)) throw collModError;
      }
    }
    notes.push(`no TTL index on ${collection.collectionName} (${error.codeName ?? error.code}): retention by the hourly delete`);
    return false;
  }
}

async function createIndexes(collection: Collection<Document>, timeseries: boolean, notes: string[]): Promise<void> {
  const specs: IndexDescription[] = timeseries
    ? [
        // MongoDB 6.3+ makes (battery_id, time) by itself; older servers need it for the newest-first reads.
        { key: { battery_id: 1, [TIME_FIELD]: 1 }, name: 'battery_clock' },
        { key: { battery_id: 1, timestamp: 1 }, name: 'battery_time' },
        { key: { timestamp: 1 }, name: 'time_order' },
        // No unique index on a time-series collection: keys are looked up before inserting.
        { key: { key: 1 }, name: 'idempotency_key', partialFilterExpression: { key: { $exists: true } } },
        { key: { written_at: 1, written_row: 1 }, name: 'write_order' },
      ]
    : [
        { key: { battery_id: 1, timestamp: 1, _id: 1 }, name: 'battery_time' },
        { key: { timestamp: 1, _id: 1 }, name: 'time_order' },
        // The cluster feed reads other instances' records in write order (cluster/cluster-feed.ts).
        { key: { written_at: 1, written_row: 1, _id: 1 }, name: 'write_order' },
      ];
  for (const spec of specs) {
    try {
      await collection.createIndexes([spec]);
    } catch (error) {
      if (!isServerError(error)) throw error;
      // Reads still work without it, only slower; an index of the same name made by hand is kept.
      notes.push(`index ${spec.name} on ${collection.collectionName} not created (${error.message})`);
    }
  }
}

/**
 * Counts the original service's documents (no battery_id) into the per-pack summary as pack
 * "default", once per database. This store counts its own documents as it writes them, and it never
 * writes one without battery_id, so this count cannot overlap with theirs, whatever runs meanwhile.
 * The meta document is claimed right before the counts are added, so that of several instances
 * starting together only one adds them.
 */
export async function countLegacyDocumentsOnce(
  db: Db,
  kinds: Record<KindName, KindCollection>,
  summary: Collection<SummaryDocument>,
): Promise<number> {
  const meta = db.collection<{ _id: string; at: Date; legacy?: number }>(META_COLLECTION);
  if ((await meta.findOne({ _id: 'legacy-counted' })) !== null) return 0;
  const legacy = { battery_id: { $exists: false } };
  const found: { kind: KindName; count: number; lastSeen: number }[] = [];
  for (const kind of KIND_NAMES) {
    const { collection } = kinds[kind];
    const count = await collection.countDocuments(legacy);
    if (count === 0) continue;
    const newest = await collection.findOne(legacy, { sort: { timestamp: -1 }, projection: { timestamp: 1 } });
    found.push({ kind, count, lastSeen: Number(newest?.timestamp ?? 0) });
  }
  const total = found.reduce((sum, { count }) => sum + count, 0);
  try {
    await meta.insertOne({ _id: 'legacy-counted', at: new Date(), legacy: total });
  } catch (error) {
    if (isServerError(error) && error.code === 11000) return 0;
    throw error;
  }
  for (const { kind, count, lastSeen } of found) {
    await summary.updateOne(
      { _id: summaryId('default', kind) },
      { $inc: { count }, $max: { last_seen: lastSeen }, $setOnInsert: { battery_id: 'default', kind } },
      { upsert: true },
    );
  }
  return total;
}

/** Runs the bucket pipeline on no documents: a server without the expressions refuses it at parse time. */
async function probeServerAggregation(collection: Collection<Document>, notes: string[]): Promise<boolean> {
  try {
    // Every expression aggregate() uses, the count of a field a record may lack ($isNumber) among them.
    await collection.aggregate([{ $match: { _id: null } }, { $group: bucketGroup(0, 60, aggregatedFields('battery-data')) }]).toArray();
    return true;
  } catch (error) {
    if (!isServerError(error)) throw error;
    notes.push(`the server lacks $group expressions (${error.message}): aggregates are reduced in the store from a projected cursor`);
    return false;
  }
}

/**
 * The $group stage of aggregate(): bucket start = from + floor((timestamp - from) / width) * width,
 * the same double arithmetic as the raw computation, so bucket edges agree to the bit. $min, $max and
 * $sum pass over a missing field; a field a record may lack is counted too (`n_`), for its mean.
 */
export function bucketGroup(from: number, width: number, fields: readonly Pick<RecordField, 'name' | 'alwaysStored'>[]): Document {
  const group: Document = {
    _id: { $add: [from, { $multiply: [{ $floor: { $divide: [{ $subtract: ['$timestamp', from] }, width] } }, width] }] },
    count: { $sum: 1 },
  };
  for (const { name, alwaysStored } of fields) {
    group[`min_${name}`] = { $min: `$${name}` };
    group[`max_${name}`] = { $max: `$${name}` };
    group[`sum_${name}`] = { $sum: `$${name}` };
    if (!alwaysStored) group[`n_${name}`] = { $sum: { $cond: [{ $isNumber: `$${name}` }, 1, 0] } };
  }
  return group;
}
