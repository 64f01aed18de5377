/**
 * The alarm store on MongoDB (Atlas, or any server of the wire protocol: FerretDB has no
 * multi-document transactions, and neither has a standalone mongod), in the records' database, on a
 * client of its own: `alarm_rules`, `battery_alarms`, `alarm_events`, `alarm_packs` (the evaluation
 * state, one document per pack) and `alarm_meta`.
 *
 * All or nothing per pack without transactions: a change set is first written into each pack's own
 * document, the new state together with the pack's new alarms and events under `pending` (one
 * document: atomic on every server). Then the alarms and events go to their collections (upserts by
 * stable id: doing it twice changes nothing) and `pending` is removed. A write cut short anywhere is
 * finished by the next load(): no state without its alarms, no alarm lost, none twice.
 *
 * Like the records store, every operation is bounded in time and fails with StoreUnavailableError while
 * the server is away; nothing logged or thrown holds the URI's credentials.
 */
import { ObjectId, type AnyBulkWriteOperation, type Collection, type Db, type Document, type Filter } from 'mongodb';
import type { WriteFloor } from '../cluster/write-floor.js';
import { createCollections, MongoSideStore, sideWriteConcern, type MongoSideStoreOptions } from '../store/mongodb-side-store.js';
import type { AlarmQuery, AlarmStore, AlarmWithEvents, ChangeSet, LoadedState } from './alarm-store.js';
import type { Alarm, AlarmEvent, AlarmRule, PackState } from './model.js';
import type { Notification, Webhook } from './notifications.js';

export const ALARM_COLLECTIONS = {
  rules: 'alarm_rules',
  alarms: 'battery_alarms',
  events: 'alarm_events',
  packs: 'alarm_packs',
  meta: 'alarm_meta',
  webhooks: 'alarm_webhooks',
  outbox: 'alarm_outbox',
} as const;

/** What the store logs: a pino logger's methods bound to it fit, and so does console. */
export interface AlarmStoreLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface MongoAlarmStoreOptions extends MongoSideStoreOptions {
  logger?: AlarmStoreLogger;
}

type WithId<T> = T & { _id: string };

/** A pack's changes on their way to their collections. */
interface Pending {
  token: string;
  alarms: Alarm[];
  events: AlarmEvent[];
  /** The webhook notifications of these events (absent in documents written before webhooks). */
  outbox?: Notification[];
}

interface PackDocument {
  _id: string;
  state: PackState;
  pending?: Pending;
}

interface MetaDocument {
  _id: string;
  seeded?: string[];
  written_at?: number;
}

interface Collections {
  rules: Collection<WithId<AlarmRule>>;
  alarms: Collection<WithId<Alarm>>;
  events: Collection<WithId<AlarmEvent>>;
  packs: Collection<PackDocument>;
  meta: Collection<MetaDocument>;
  webhooks: Collection<WithId<Webhook>>;
  outbox: Collection<WithId<Notification>>;
}

const META_ID = 'engine';
const DELETE_CHUNK = 1000;
const SILENT: AlarmStoreLogger = { info() {}, warn() {} };

/** The document of a domain object: its id as `_id` too. */
const withId = <T extends { id: string }>(value: T): WithId<T> => ({ ...value, _id: value.id });

function withoutId<T>(doc: WithId<T>): T {
  const { _id, ...rest } = doc;
  return rest as T;
}

export class MongoAlarmStore extends MongoSideStore<Collections> implements AlarmStore {
  /**
   * The records store's write positions (cluster/write-floor.ts), set by the alarms plugin: events
   * carry `written_at`, by which the cluster feed hands every instance's alarm events on.
   */
  writeFloor: WriteFloor | undefined;
  readonly #log: AlarmStoreLogger;

  constructor(options: MongoAlarmStoreOptions) {
    super(options, 'battery-monitor-alarms', 'MongoDB alarm store');
    this.#log = options.logger ?? SILENT;
  }

  protected async setUp(db: Db): Promise<Collections> {
    const writeConcern = await sideWriteConcern(db, this.operationTimeoutMs);
    await createCollections(db, Object.values(ALARM_COLLECTIONS));
    const collections: Collections = {
      rules: db.collection(ALARM_COLLECTIONS.rules, writeConcern),
      alarms: db.collection(ALARM_COLLECTIONS.alarms, writeConcern),
      events: db.collection(ALARM_COLLECTIONS.events, writeConcern),
      packs: db.collection(ALARM_COLLECTIONS.packs, writeConcern),
      meta: db.collection(ALARM_COLLECTIONS.meta, writeConcern),
      webhooks: db.collection(ALARM_COLLECTIONS.webhooks, writeConcern),
      outbox: db.collection(ALARM_COLLECTIONS.outbox, writeConcern),
    };
    const indexes: [Collection<any>, Document, string][] = [
      [collections.alarms, { raised_at: -1, _id: -1 }, 'raised'],
      [collections.alarms, { battery_id: 1, raised_at: -1 }, 'pack_raised'],
      [collections.alarms, { state: 1 }, 'state'],
      [collections.alarms, { cleared_at: 1 }, 'cleared'],
      [collections.events, { alarm_id: 1, seq: 1 }, 'alarm_seq'],
      // The cluster feed reads every instance's events in write order.
      [collections.events, { written_at: 1, _id: 1 }, 'write_order'],
      [collections.outbox, { state: 1, created_at: 1, seq: 1 }, 'state_created'],
      [collections.outbox, { webhook_id: 1, created_at: -1 }, 'webhook_created'],
    ];
    for (const [collection, key, name] of indexes) {
      try {
        await collection.createIndex(key, { name });
      } catch (error) {
        // Queries still work without it, only slower.
        if ((error as Error)?.name !== 'MongoServerError') throw error;
        this.#log.warn(`MongoDB alarm store: index ${name} on ${collection.collectionName} not created (${this.redact((error as Error).message)})`);
      }
    }
    return collections;
  }

  async load(): Promise<LoadedState> {
    const c = await this.ready();
    const packs = await this.bounded(c.packs.find().toArray(), 'load');
    // What an interrupted apply left on its way to the collections.
    const interrupted = packs.filter((doc) => doc.pending !== undefined);
    if (interrupted.length > 0) {
      await this.#deliver(c, interrupted.map((doc) => doc.pending!));
      await this.#settle(c, interrupted.map((doc) => ({ batteryId: doc._id, token: doc.pending!.token })));
      this.#log.info(`MongoDB alarm store: finished an interrupted write of ${interrupted.length} pack(s)`);
    }
    const rules = await this.bounded(c.rules.find().sort({ created_at: 1, _id: 1 }).toArray(), 'load');
    const meta = await this.bounded(c.meta.findOne({ _id: META_ID }), 'load');
    const webhooks = await this.bounded(c.webhooks.find().sort({ created_at: 1, _id: 1 }).toArray(), 'load');
    const outbox = await this.bounded(c.outbox.find({ state: 'pending' }).sort({ created_at: 1, seq: 1 }).toArray(), 'load');
    return {
      rules: rules.map(withoutId),
      packs: packs.map((doc) => doc.state),
      seeded: meta?.seeded ?? [],
      webhooks: webhooks.map(withoutId),
      outbox: outbox.map(withoutId),
      ...(meta?.written_at === undefined ? {} : { writtenAt: meta.written_at }),
    };
  }

  async loadRules(): Promise<AlarmRule[]> {
    const c = await this.ready();
    return (await this.bounded(c.rules.find().sort({ created_at: 1, _id: 1 }).toArray(), 'load')).map(withoutId);
  }

  async loadWebhooks(): Promise<Webhook[]> {
    const c = await this.ready();
    return (await this.bounded(c.webhooks.find().sort({ created_at: 1, _id: 1 }).toArray(), 'load')).map(withoutId);
  }

  async loadPack(batteryId: string): Promise<PackState | undefined> {
    const c = await this.ready();
    const doc = await this.bounded(c.packs.findOne({ _id: batteryId }), 'load');
    if (doc === null) return undefined;
    if (doc.pending !== undefined) {
      await this.#deliver(c, [doc.pending]);
      await this.#settle(c, [{ batteryId, token: doc.pending.token }]);
    }
    return doc.state;
  }

  async apply(changes: ChangeSet): Promise<void> {
    const c = await this.ready();
    // Rules first: a rule's deletion stored before the clears of its alarms, else a restart in between would raise them again.
    if (changes.rules.length > 0) {
      const ops: AnyBulkWriteOperation<WithId<AlarmRule>>[] = changes.rules.map((change) =>
        'put' in change
          ? { replaceOne: { filter: { _id: change.put.id }, replacement: withId(change.put), upsert: true } }
          : { deleteOne: { filter: { _id: change.delete } } },
      );
      await this.bounded(c.rules.bulkWrite(ops, { ordered: true }), 'rule write');
    }

    const token = new ObjectId().toHexString();
    const pending = new Map<string, Pending>();
    const pendingOf = (batteryId: string) => {
      let entry = pending.get(batteryId);
      if (entry === undefined) {
        entry = { token, alarms: [], events: [], outbox: [] };
        pending.set(batteryId, entry);
      }
      return entry;
    };
    for (const alarm of changes.alarms) pendingOf(alarm.battery_id).alarms.push(alarm);
    for (const event of changes.events) pendingOf(event.battery_id).events.push(event);
    for (const row of changes.outbox ?? []) pendingOf(row.battery_id).outbox!.push(row);
    const packIds = new Set(changes.packs.map((pack) => pack.battery_id));
    for (const batteryId of pending.keys()) {
      if (!packIds.has(batteryId)) throw new Error(`alarm change set: changes for pack ${batteryId} without its state`);
    }
    if (changes.packs.length > 0) {
      const ops: AnyBulkWriteOperation<PackDocument>[] = changes.packs.map((pack) => {
        const replacement: PackDocument = { _id: pack.battery_id, state: pack };
        const changesOfPack = pending.get(pack.battery_id);
        if (changesOfPack !== undefined) replacement.pending = changesOfPack;
        return { replaceOne: { filter: { _id: pack.battery_id }, replacement, upsert: true } };
      });
      await this.bounded(c.packs.bulkWrite(ops, { ordered: false }), 'state write');
    }
    if (pending.size > 0) {
      await this.#deliver(c, [...pending.values()]);
      await this.#settle(c, [...pending.keys()].map((batteryId) => ({ batteryId, token })));
    }
    const meta: Partial<MetaDocument> = { written_at: changes.writtenAt };
    if (changes.seeded !== undefined) meta.seeded = changes.seeded;
    await this.bounded(c.meta.updateOne({ _id: META_ID }, { $set: meta }, { upsert: true }), 'meta write');
  }

  /** Alarms and events into their collections; each write is idempotent (stable ids). */
  async #deliver(c: Collections, pending: Pending[]): Promise<void> {
    // A later entry of the same alarm is newer: the last one wins.
    const alarms = new Map<string, Alarm>();
    for (const entry of pending) for (const alarm of entry.alarms) alarms.set(alarm.id, alarm);
    if (alarms.size > 0) {
      const ops: AnyBulkWriteOperation<WithId<Alarm>>[] = [...alarms.values()].map((alarm) => ({
        replaceOne: { filter: { _id: alarm.id }, replacement: withId(alarm), upsert: true },
      }));
      await this.bounded(c.alarms.bulkWrite(ops, { ordered: false }), 'alarm write');
    }
    const events = pending.flatMap((entry) => entry.events).map(withId);
    if (events.length > 0 && this.writeFloor !== undefined) {
      // Held until inserted: the cluster feed reads no event past a position still being written.
      const position = this.writeFloor.stamp();
      let doubtful = true;
      try {
        for (const event of events) (event as Document).written_at = position;
        await this.#insertOnce(c.events, events);
        doubtful = false;
      } finally {
        this.writeFloor.release(position, doubtful);
      }
    } else await this.#insertOnce(c.events, events);
    // Inserted, never replaced: a notification stored by a write cut short may have been delivered since.
    await this.#insertOnce(c.outbox, pending.flatMap((entry) => entry.outbox ?? []).map(withId));
  }

  /** Inserts documents, those already there (same id) left as they are. */
  async #insertOnce<T extends Document>(collection: Collection<T>, docs: T[]): Promise<void> {
    if (docs.length === 0) return;
    try {
      // insertMany's duplicate keys are read here.
      await this.bounded(collection.insertMany(docs as never, { ordered: false }), 'insert once', (error) => (error as Error)?.name === 'MongoBulkWriteError');
    } catch (error) {
      // 11000: stored by the write that was cut short; the same id is the same event.
      const writeErrors = (error as { writeErrors?: { code: number }[] | { code: number } }).writeErrors;
      const list = writeErrors === undefined ? undefined : Array.isArray(writeErrors) ? writeErrors : [writeErrors];
      if ((error as Error)?.name !== 'MongoBulkWriteError' || list === undefined || list.length === 0 || list.some((e) => e.code !== 11000)) {
        throw this.storeError(error);
      }
    }
  }

  async #settle(c: Collections, packs: { batteryId: string; token: string }[]): Promise<void> {
    const ops: AnyBulkWriteOperation<PackDocument>[] = packs.map(({ batteryId, token }) => ({
      updateOne: { filter: { _id: batteryId, 'pending.token': token }, update: { $unset: { pending: '' } } },
    }));
    await this.bounded(c.packs.bulkWrite(ops, { ordered: false }), 'state write');
  }

  async alarms(query: AlarmQuery): Promise<Alarm[]> {
    const c = await this.ready();
    const filter: Filter<WithId<Alarm>> = {};
    if (query.state === 'open') filter.state = { $ne: 'cleared' };
    else if (query.state !== 'all') filter.state = query.state;
    if (query.batteryId !== undefined) filter.battery_id = query.batteryId;
    if (query.severity !== undefined) filter.severity = query.severity;
    if (query.ruleId !== undefined) filter.rule_id = query.ruleId;
    if (query.since !== undefined) filter.$or = [{ cleared_at: null }, { cleared_at: { $gte: query.since } }];
    const docs = await this.bounded(c.alarms.find(filter).sort({ raised_at: -1, _id: -1 }).limit(query.limit).toArray(), 'read');
    return docs.map(withoutId);
  }

  async alarm(id: string): Promise<AlarmWithEvents | null> {
    const c = await this.ready();
    const doc = await this.bounded(c.alarms.findOne({ _id: id }), 'read');
    if (doc === null) return null;
    const events = await this.bounded(c.events.find({ alarm_id: id }, { projection: { written_at: 0 } }).sort({ seq: 1 }).toArray(), 'read');
    return { ...withoutId(doc), events: events.map(withoutId) };
  }

  async deleteClosedBefore(cutoff: number): Promise<number> {
    const c = await this.ready();
    let deleted = 0;
    for (;;) {
      const old = await this.bounded(
        c.alarms.find({ state: 'cleared', cleared_at: { $lt: cutoff } }, { projection: { _id: 1 } }).limit(DELETE_CHUNK).toArray(),
        'retention',
      );
      if (old.length === 0) break;
      const ids = old.map((doc) => doc._id);
      // Events first: an interruption then leaves an alarm without its history, never a history without its alarm.
      await this.bounded(c.events.deleteMany({ alarm_id: { $in: ids } }), 'retention');
      const result = await this.bounded(c.alarms.deleteMany({ _id: { $in: ids }, state: 'cleared' }), 'retention');
      deleted += result.deletedCount;
      if (old.length < DELETE_CHUNK) break;
    }
    await this.bounded(c.outbox.deleteMany({ created_at: { $lt: cutoff }, state: { $ne: 'pending' } }), 'retention');
    return deleted;
  }

  async putWebhook(webhook: Webhook): Promise<void> {
    const c = await this.ready();
    await this.bounded(c.webhooks.replaceOne({ _id: webhook.id }, withId(webhook), { upsert: true }), 'webhook write');
  }

  async deleteWebhook(id: string): Promise<void> {
    const c = await this.ready();
    // The webhook last: an interruption leaves a webhook without its history, never a history without its webhook.
    await this.bounded(c.outbox.deleteMany({ webhook_id: id }), 'webhook write');
    await this.bounded(c.webhooks.deleteOne({ _id: id }), 'webhook write');
  }

  async updateNotification(notification: Notification): Promise<void> {
    const c = await this.ready();
    const { state, attempt_count, attempts, next_at, delivered_at } = notification;
    await this.bounded(c.outbox.updateOne({ _id: notification.id }, { $set: { state, attempt_count, attempts, next_at, delivered_at } }), 'delivery write');
  }

  async deliveries(webhookId: string, limit: number): Promise<Notification[]> {
    const c = await this.ready();
    const docs = await this.bounded(c.outbox.find({ webhook_id: webhookId }).sort({ created_at: -1, seq: -1 }).limit(limit).toArray(), 'read');
    return docs.map(withoutId);
  }
}
