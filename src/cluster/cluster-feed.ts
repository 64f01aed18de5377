/**
 * The cluster feed (MongoDB only): every record stored through any instance reaches this instance's
 * subscribers (the live stream, and whatever else subscribes), once, in write order, as commits of
 * the same shape the local after-commit stage hands on (after-commit.ts). SQLite mode is one process
 * and keeps the local stage.
 *
 * How: each instance stamps its inserts with a write position (`written_at`) and publishes, every
 * poll, its floor: below it, every write it sent is visible or never will be (write-floor.ts). The
 * instances' floors are documents in `cluster_instances` ({_id: instance id, floor, expires_at}),
 * renewed every poll and valid for LEASE_SECONDS. The feed reads each kind's records from its
 * position up to, not including, the lowest floor of the live instances, by the (written_at, _id)
 * index (written_row: a write's rows in the order they were submitted), CLUSTER_POLL_MS apart (at
 * once again while a read comes back full).
 *
 * A lone instance reads nothing back: each instance's document also says the position of its last
 * insert (last_stamp), kept for an hour after it leaves or dies; while no other instance's is at or
 * past the feed's position, what there is to hand on is this instance's own inserts, which the store
 * tells the feed of (onWritten) before releasing their positions, and the feed hands them on from
 * memory, in the same order and at the same moment as it would have read them.
 *
 * Why nothing is missed or repeated: a record is read once, when the range between the last
 * position and the safe point first covers it; the safe point only passes a position once every
 * write at or below it has become visible (or failed for good), so no record can appear behind the
 * feed's position later. Writes from several instances, two in flight per instance, or retried
 * through an outage become visible in any order; only the safe point waits for them. The cost: a
 * write in flight holds every instance's feed back until it answers, and an instance that dies holds
 * it back until its floor expires (LEASE_SECONDS): delivery is late then, not lost.
 *
 * Assumptions (docs/deploy.md): the instances' clocks agree to well within LEASE_SECONDS (expiry is
 * judged by the reader's clock; positions are compared only with the same instance's floor, so skew
 * costs latency, not records); an instance that pauses past its lease (and so is taken for dead)
 * joins again before its next writes count, but writes it had in flight across the pause may be
 * passed over.
 *
 * Alarm events (onAlarmChange) are read the same way: the alarm store stamps them from the same
 * write positions (mongodb-alarm-store.ts), each with its alarm as it is when read.
 *
 * Change streams: detected at start (shown in /health) but not used yet: FerretDB, the server the
 * tests run on, has none, so that path could not be tested.
 */
import type { Collection, Db, Document, ObjectId } from 'mongodb';
import { ALARM_COLLECTIONS } from '../alarms/mongodb-alarm-store.js';
import type { Alarm, AlarmChange, AlarmEvent } from '../alarms/model.js';
import { AfterCommit, type CommitSubscriber, type StoredBatch } from '../ingest/after-commit.js';
import { RecordBatch } from '../ingest/record-batch.js';
import { KIND_NAMES, type KindName } from '../records/kinds.js';
import { fromDocument, projectionFor } from '../store/mongodb-documents.js';
import type { MongoStore } from '../store/mongodb-store.js';
import type { WritePosition } from '../store/store.js';
import { withDeadline } from '../store/deadline.js';

export const INSTANCES_COLLECTION = 'cluster_instances';
/**
 * Records read per kind per poll; a full read is followed by the next at once. Large: FerretDB scans
 * the whole collection for each read (no filter pushdown), so fewer reads catch up faster.
 */
const READ_LIMIT = 20_000;
/** An instance's document is removed this long after it expired. */
const GONE_SECONDS = 3600;
/** Upper bound on one round trip of the feed. */
const OPERATION_TIMEOUT_MS = 10_000;

export interface InstanceDocument {
  _id: string;
  /** Write position: every write of this instance below it is visible or never will be. */
  floor: number;
  /** Unix seconds (the instance's clock): past it, the instance counts as gone. */
  expires_at: number;
  /** The position of the last insert it sent: a reader with no other instance's insert past its own position reads nothing. */
  last_stamp?: number;
}

export interface FeedLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ClusterFeedOptions {
  store: Pick<MongoStore, 'cluster' | 'writeFloor' | 'onWritten'>;
  instanceId: string;
  leaseSeconds: number;
  pollMs: number;
  logger: FeedLogger;
}

export interface FeedStatus {
  /** How records of other instances arrive: 'poll' (the store, by write position). */
  mode: 'poll';
  /** Whether the server offers change streams (detected at start; undefined before it could ask). */
  changeStreams: boolean | undefined;
  /** The lowest floor read at the last poll, Unix seconds: records before it have been delivered. */
  safePoint: number | undefined;
}

interface Cursor {
  at: number;
  /** Past the records at `at` up to this row and id; null: from `at` inclusive. */
  after: { row: number; id: ObjectId } | null;
}

function startAt(position: number): Map<KindName, Cursor> {
  return new Map(KIND_NAMES.map((kind) => [kind, { at: position, after: null }]));
}

export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return withDeadline(promise, ms, () => new Error(`${what}: no answer within ${ms} ms`));
}

export class ClusterFeed {
  readonly #store: ClusterFeedOptions['store'];
  readonly #instanceId: string;
  readonly #leaseSeconds: number;
  readonly #pollMs: number;
  readonly #log: FeedLogger;
  readonly #afterCommit: AfterCommit;
  #subscribers = 0;
  /** Per kind, how far the feed has read; undefined while nobody subscribes. */
  #cursors: Map<KindName, Cursor> | undefined;
  #changeStreams: boolean | undefined;
  #safePoint: number | undefined;
  /** The instance's clock at the last renewal that was stored. */
  #renewedAt = -Infinity;
  #joined = false;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  #problem: string | undefined;
  #closed = false;
  /** Every record below this position has been handed to the subscribers. */
  #delivered = -Infinity;
  #waiters: { position: number; resolve(): void }[] = [];
  readonly #alarmListeners = new Set<(changes: readonly AlarmChange[]) => void>();
  /** How far the alarm events have been read; undefined while nobody listens. */
  #alarmCursor: { at: number; id: string | null } | undefined;
  /** This instance's own inserts not yet handed on, per kind, as the store told them (onWritten). */
  readonly #own = new Map<KindName, { position: number; docs: readonly Document[] }[]>();

  constructor(options: ClusterFeedOptions) {
    this.#store = options.store;
    options.store.onWritten = (kind, docs) => {
      if (this.#cursors === undefined || this.#closed) return;
      let entries = this.#own.get(kind);
      if (entries === undefined) this.#own.set(kind, (entries = []));
      entries.push({ position: docs[0]!.written_at as number, docs });
    };
    this.#instanceId = options.instanceId;
    this.#leaseSeconds = options.leaseSeconds;
    this.#pollMs = options.pollMs;
    this.#log = options.logger;
    this.#afterCommit = new AfterCommit(options.logger);
  }

  get status(): FeedStatus {
    return { mode: 'poll', changeStreams: this.#changeStreams, safePoint: this.#safePoint };
  }

  /** Calls `subscriber` with what every instance stores from now on; answers the function that stops it. */
  subscribe(subscriber: CommitSubscriber): () => void {
    const unsubscribe = this.#afterCommit.subscribe(subscriber);
    // The first subscriber: from the last safe point on (a little before now; the next poll would
    // start later and pass over what is stored meanwhile).
    if (this.#subscribers === 0) this.#cursors = startAt(this.#safePoint ?? this.#store.writeFloor.floor());
    this.#subscribers++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      unsubscribe();
      if (--this.#subscribers === 0) {
        this.#cursors = undefined;
        this.#own.clear();
        this.#delivered = -Infinity;
      }
    };
  }

  /**
   * Where the feed stands for a kind: every record below the position (at it too when `inclusive`)
   * has been handed to the subscribers, none past it. Undefined while nobody subscribes.
   */
  readPosition(kind: KindName): WritePosition | undefined {
    const cursor = this.#cursors?.get(kind);
    return cursor === undefined ? undefined : { position: cursor.at, inclusive: cursor.after !== null };
  }

  /**
   * Calls `listener` with every alarm change any instance stores from now on (each pack's alarms are
   * evaluated on one instance: cluster/pack-ownership.ts), in write order, the alarm as it is when
   * read; answers the function that stops it. The live stream's `event: alarm`.
   */
  onAlarmChange(listener: (changes: readonly AlarmChange[]) => void): () => void {
    if (this.#alarmListeners.size === 0) this.#alarmCursor = { at: this.#safePoint ?? this.#store.writeFloor.floor(), id: null };
    this.#alarmListeners.add(listener);
    return () => {
      this.#alarmListeners.delete(listener);
      if (this.#alarmListeners.size === 0) this.#alarmCursor = undefined;
    };
  }

  /**
   * Resolves once every record this instance had stored when it was called (and everything the
   * others had stored before) has been handed to the subscribers: a read after a write sees what the
   * write caused (alarms, analytics). Only while someone subscribes; the caller bounds the wait.
   */
  caughtUp(): Promise<void> {
    const position = this.#store.writeFloor.floor();
    if (this.#delivered >= position) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ position, resolve }));
  }

  /** Joins (one bounded attempt: a server away is joined in the background) and starts polling. */
  async start(): Promise<void> {
    try {
      await this.#poll();
      const { kinds } = await this.#store.cluster();
      this.#changeStreams = await changeStreamsOffered(kinds[KIND_NAMES[0]!].collection);
      this.#log.info(
        { instance: this.#instanceId, poll_ms: this.#pollMs, change_streams: this.#changeStreams },
        `cluster feed: reading other instances' records every ${this.#pollMs} ms` +
          (this.#changeStreams ? ' (the server offers change streams; they are not used yet)' : ''),
      );
    } catch {
      // #poll logged it; polling goes on.
    }
    this.#schedule(this.#pollMs);
  }

  /** Polls start CLUSTER_POLL_MS apart (a slow poll is followed by the next at once), and at once while reads come back full. */
  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const startedAt = Date.now();
      this.#polling = this.#poll().then(
        (more) => this.#schedule(more ? 0 : Math.max(0, this.#pollMs - (Date.now() - startedAt))),
        () => this.#schedule(this.#pollMs),
      );
    }, delayMs);
  }

  /** One round: renew this instance's floor, then read what is safe to read. Answers whether there is more at once. */
  async #poll(): Promise<boolean> {
    try {
      const more = await this.#round();
      if (this.#problem !== undefined) this.#log.info({}, 'cluster feed: the store answers again');
      this.#problem = undefined;
      return more;
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this.#problem) this.#log.warn({ err: message }, 'cluster feed: cannot reach the store; retrying');
      this.#problem = message;
      throw error;
    }
  }

  async #round(): Promise<boolean> {
    const { db, kinds } = await this.#store.cluster();
    const instances = db.collection<InstanceDocument>(INSTANCES_COLLECTION);
    const now = Date.now() / 1000;
    // Taken for gone since the last renewal (a long pause): readers may be past this clock.
    if (!this.#joined || now >= this.#renewedAt + this.#leaseSeconds) await this.#join(instances);
    const floor = this.#store.writeFloor.floor();
    const lastStamp = this.#store.writeFloor.lastStamp();
    await within(
      instances.updateOne(
        { _id: this.#instanceId },
        { $set: { floor, expires_at: now + this.#leaseSeconds, last_stamp: Number.isFinite(lastStamp) ? lastStamp : 0 } },
        { upsert: true },
      ),
      OPERATION_TIMEOUT_MS,
      'renewal',
    );
    this.#renewedAt = now;
    // Every instance's document, gone ones too: their last inserts may still be ahead of this feed.
    const all = await within(instances.find({}).maxTimeMS(OPERATION_TIMEOUT_MS).toArray(), OPERATION_TIMEOUT_MS, 'instances');
    const live = all.filter((instance) => instance.expires_at > now);
    const othersWrote = Math.max(-Infinity, ...all.filter((instance) => instance._id !== this.#instanceId).map((instance) => instance.last_stamp ?? Infinity));
    const safe = Math.min(floor, ...live.map((instance) => instance.floor));
    this.#safePoint = safe;
    await this.#readAlarmChanges(db, safe);
    const cursors = this.#cursors;
    if (this.#subscribers === 0 || cursors === undefined) return false;
    const stored: StoredBatch[] = [];
    let more = false;
    for (const kind of KIND_NAMES) {
      const cursor = cursors.get(kind)!;
      if (safe <= cursor.at) continue;
      if (cursor.after === null && othersWrote < cursor.at) {
        // No other instance has inserted anything at or past this position: what there is to hand on
        // is this instance's own, in memory. (A lone instance never reads its records back.)
        const batch = this.#ownBelow(kind, safe);
        if (batch !== undefined) stored.push(batch);
        cursors.set(kind, { at: safe, after: null });
        continue;
      }
      const range: Document =
        cursor.after === null
          ? { written_at: { $gte: cursor.at, $lt: safe } }
          : {
              $or: [
                { written_at: { $gt: cursor.at, $lt: safe } },
                { written_at: cursor.at, written_row: { $gt: cursor.after.row } },
                { written_at: cursor.at, written_row: cursor.after.row, _id: { $gt: cursor.after.id } },
              ],
            };
      const docs = await within(
        kinds[kind].collection
          .find(range, { sort: { written_at: 1, written_row: 1, _id: 1 }, limit: READ_LIMIT, projection: { ...projectionFor(kind), written_at: 1, written_row: 1 } })
          .maxTimeMS(OPERATION_TIMEOUT_MS)
          .toArray(),
        OPERATION_TIMEOUT_MS,
        'records',
      );
      if (docs.length === 0) {
        // Nothing below the safe point is still to come: the next read starts there.
        cursors.set(kind, { at: safe, after: null });
        continue;
      }
      const batch = new RecordBatch(kind, docs.length);
      const ids: string[] = [];
      for (const doc of docs) {
        const record = fromDocument(kind, doc);
        batch.append(record, record.received_at);
        ids.push(record._id);
      }
      stored.push({ batch, ids, existing: [] });
      const last = docs[docs.length - 1]!;
      if (docs.length === READ_LIMIT) {
        cursors.set(kind, { at: last.written_at as number, after: { row: last.written_row as number, id: last._id as ObjectId } });
        more = true;
      } else cursors.set(kind, { at: safe, after: null });
    }
    // The subscribers all left (or a new first one came) meanwhile: these reads are nobody's.
    // Own inserts below the new positions were handed on, from memory or read back.
    for (const [kind, entries] of this.#own) {
      const at = cursors.get(kind)!.at;
      if (entries.some((entry) => entry.position < at)) this.#own.set(kind, entries.filter((entry) => entry.position >= at));
    }
    if (this.#closed || this.#cursors !== cursors) return more;
    if (stored.length > 0) this.#afterCommit.publish(stored);
    this.#delivered = Math.min(...[...cursors.values()].map((cursor) => cursor.at));
    if (this.#waiters.length > 0) {
      const due = this.#waiters.filter((waiter) => waiter.position <= this.#delivered);
      this.#waiters = this.#waiters.filter((waiter) => waiter.position > this.#delivered);
      for (const waiter of due) waiter.resolve();
    }
    return more;
  }

  /** The alarm events stored below `safe` since the last read, with their alarms, to the listeners. */
  async #readAlarmChanges(db: Db, safe: number): Promise<void> {
    const cursor = this.#alarmCursor;
    if (cursor === undefined || safe <= cursor.at) return;
    const range: Document =
      cursor.id === null
        ? { written_at: { $gte: cursor.at, $lt: safe } }
        : { $or: [{ written_at: { $gt: cursor.at, $lt: safe } }, { written_at: cursor.at, _id: { $gt: cursor.id } }] };
    const events = await within(
      db.collection(ALARM_COLLECTIONS.events).find(range, { sort: { written_at: 1, _id: 1 }, limit: READ_LIMIT }).maxTimeMS(OPERATION_TIMEOUT_MS).toArray(),
      OPERATION_TIMEOUT_MS,
      'alarm events',
    );
    if (events.length > 0) {
      const ids = [...new Set(events.map((event) => event.alarm_id as string))];
      const alarms = await within(
        db.collection(ALARM_COLLECTIONS.alarms).find({ _id: { $in: ids } } as Document).maxTimeMS(OPERATION_TIMEOUT_MS).toArray(),
        OPERATION_TIMEOUT_MS,
        'alarms',
      );
      const byId = new Map(alarms.map(({ _id, ...alarm }) => [_id as unknown as string, alarm as unknown as Alarm]));
      const changes: AlarmChange[] = [];
      for (const { _id, written_at, ...event } of events) {
        const alarm = byId.get(event.alarm_id as string);
        if (alarm !== undefined) changes.push({ event: event as unknown as AlarmEvent, alarm });
      }
      if (this.#alarmCursor !== cursor) return;
      for (const listener of this.#alarmListeners) {
        try {
          listener(changes);
        } catch (error) {
          this.#log.error({ err: error }, 'cluster feed: an alarm listener failed');
        }
      }
    }
    const last = events[events.length - 1];
    if (this.#alarmCursor === cursor) {
      this.#alarmCursor = events.length === READ_LIMIT && last !== undefined ? { at: last.written_at as number, id: last._id as unknown as string } : { at: safe, id: null };
    }
  }

  /** This instance's inserts of a kind below `safe`, in write order, as one batch; undefined when none. */
  #ownBelow(kind: KindName, safe: number): StoredBatch | undefined {
    const entries = (this.#own.get(kind) ?? []).filter((entry) => entry.position < safe).sort((a, b) => a.position - b.position);
    if (entries.length === 0) return undefined;
    const batch = new RecordBatch(kind);
    const ids: string[] = [];
    for (const { docs } of entries) {
      for (const doc of docs) {
        const record = fromDocument(kind, doc);
        batch.append(record, record.received_at);
        ids.push(record._id);
      }
    }
    return { batch, ids, existing: [] };
  }

  /**
   * Takes a place among the instances: its floor first (so that readers from now on wait for it),
   * then its later writes above every live floor (readers that did not see it yet are no further).
   */
  async #join(instances: Collection<InstanceDocument>): Promise<void> {
    const now = Date.now() / 1000;
    const floor = this.#store.writeFloor.floor();
    await within(instances.updateOne({ _id: this.#instanceId }, { $set: { floor, expires_at: now + this.#leaseSeconds } }, { upsert: true }), OPERATION_TIMEOUT_MS, 'join');
    // Instances gone for an hour: every reader is past their inserts by then.
    await within(instances.deleteMany({ expires_at: { $lt: now - GONE_SECONDS } }), OPERATION_TIMEOUT_MS, 'join');
    const live = await within(instances.find({ expires_at: { $gt: now } }).maxTimeMS(OPERATION_TIMEOUT_MS).toArray(), OPERATION_TIMEOUT_MS, 'join');
    for (const instance of live) this.#store.writeFloor.raise(instance.floor);
    this.#joined = true;
  }

  /** Stops polling and leaves: the others stop waiting for this instance's floor at once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#polling;
    try {
      const { db } = await within(this.#store.cluster(), 2000, 'leave');
      // Kept, expired: its last_stamp tells readers its inserts up to there may be theirs to read.
      const lastStamp = this.#store.writeFloor.lastStamp();
      await within(
        db
          .collection<InstanceDocument>(INSTANCES_COLLECTION)
          .updateOne({ _id: this.#instanceId }, { $set: { expires_at: Date.now() / 1000, last_stamp: Number.isFinite(lastStamp) ? lastStamp : 0 } }),
        2000,
        'leave',
      );
    } catch {
      // Away: the others wait until its floor expires.
    }
  }
}

/** Whether the server offers change streams on this collection (FerretDB 1.x: no; a replica set or Atlas: yes). */
async function changeStreamsOffered(collection: Collection<Document>): Promise<boolean> {
  const stream = collection.watch([], { maxAwaitTimeMS: 1 });
  stream.on('error', () => undefined);
  try {
    await within(stream.tryNext(), 3000, 'change stream');
    return true;
  } catch {
    return false;
  } finally {
    await stream.close().catch(() => undefined);
  }
}
