/**
 * The analytics store on MongoDB (Atlas, or any server of the wire protocol), in the records'
 * database, on a client of its own: `analytics_packs` (one document per pack: its whole state),
 * `analytics_specs` (per-pack overrides) and `analytics_meta`. A pack's state is one document, so
 * each is written whole or not at all on every server; no transaction is needed.
 *
 * Every operation is bounded in time and fails with StoreUnavailableError while the server is away;
 * nothing logged or thrown holds the URI's credentials.
 */
import { MongoClient, type Collection, type Db } from 'mongodb';
import { isReplicaSet } from '../store/mongodb-setup.js';
import { maskMongoUri, redactor, sideClient } from '../store/mongodb-uri.js';
import { StoreUnavailableError } from '../store/store.js';
import type { AnalyticsStore, LoadedAnalytics, PackOverrides } from './analytics-store.js';
import type { PackAnalytics } from './pack-state.js';
import { withDeadline } from '../store/deadline.js';

export const ANALYTICS_COLLECTIONS = { packs: 'analytics_packs', specs: 'analytics_specs', meta: 'analytics_meta' } as const;

export interface AnalyticsStoreLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface MongoAnalyticsStoreOptions {
  uri: string;
  databaseName: string;
  logger?: AnalyticsStoreLogger;
  serverSelectionTimeoutMs?: number;
  operationTimeoutMs?: number;
}

interface PackDocument {
  _id: string;
  state: PackAnalytics;
}

interface SpecsDocument {
  _id: string;
  specs: PackOverrides;
}

interface MetaDocument {
  _id: string;
  written_at: number;
}

interface Collections {
  packs: Collection<PackDocument>;
  specs: Collection<SpecsDocument>;
  meta: Collection<MetaDocument>;
}

const META_ID = 'engine';

export class MongoAnalyticsStore implements AnalyticsStore {
  readonly name = 'mongodb';
  readonly #client: MongoClient;
  readonly #databaseName: string;
  readonly #redact: (message: string) => string;
  readonly #where: string;
  readonly #operationTimeoutMs: number;
  #collections: Promise<Collections> | undefined;
  #closed = false;

  constructor(options: MongoAnalyticsStoreOptions) {
    this.#databaseName = options.databaseName;
    this.#redact = redactor(options.uri);
    this.#where = maskMongoUri(options.uri);
    this.#operationTimeoutMs = options.operationTimeoutMs ?? 10_000;
    this.#client = sideClient(options.uri, 'battery-monitor-analytics', 'MongoDB analytics store', options.serverSelectionTimeoutMs ?? 2500);
  }

  #ready(): Promise<Collections> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError('MongoDB analytics store is closed'));
    this.#collections ??= this.#bounded(this.#setUp(), 'set-up').catch((error: unknown) => {
      this.#collections = undefined;
      throw error;
    });
    return this.#collections;
  }

  async #setUp(): Promise<Collections> {
    await this.#client.connect();
    const db = this.#client.db(this.#databaseName);
    const writeConcern = (await isReplicaSet(db)) ? { writeConcern: { w: 'majority' as const, wtimeoutMS: this.#operationTimeoutMs } } : {};
    const existing = new Set((await db.listCollections({}, { nameOnly: true }).toArray()).map((info) => info.name));
    for (const name of Object.values(ANALYTICS_COLLECTIONS)) if (!existing.has(name)) await createCollection(db, name);
    return {
      packs: db.collection(ANALYTICS_COLLECTIONS.packs, writeConcern),
      specs: db.collection(ANALYTICS_COLLECTIONS.specs, writeConcern),
      meta: db.collection(ANALYTICS_COLLECTIONS.meta, writeConcern),
    };
  }

  async load(): Promise<LoadedAnalytics> {
    const c = await this.#ready();
    const [packs, specs, meta] = await this.#bounded(
      Promise.all([c.packs.find().toArray(), c.specs.find().toArray(), c.meta.findOne({ _id: META_ID })]),
      'load',
    );
    return {
      packs: packs.map((doc) => doc.state),
      specs: specs.map((doc) => doc.specs),
      ...(meta === null ? {} : { writtenAt: meta.written_at }),
    };
  }

  async loadPack(batteryId: string): Promise<PackAnalytics | undefined> {
    const c = await this.#ready();
    const doc = await this.#bounded(c.packs.findOne({ _id: batteryId }), 'load');
    return doc?.state;
  }

  async savePacks(packs: readonly PackAnalytics[], writtenAt: number): Promise<void> {
    const c = await this.#ready();
    if (packs.length > 0) {
      await this.#bounded(
        c.packs.bulkWrite(
          packs.map((state) => ({ replaceOne: { filter: { _id: state.battery_id }, replacement: { state }, upsert: true } })),
          { ordered: false },
        ),
        'save',
      );
    }
    await this.#bounded(c.meta.replaceOne({ _id: META_ID }, { written_at: writtenAt }, { upsert: true }), 'save');
  }

  async loadSpecs(): Promise<PackOverrides[]> {
    const c = await this.#ready();
    return (await this.#bounded(c.specs.find().toArray(), 'load')).map((doc) => doc.specs);
  }

  async putSpecs(specs: PackOverrides): Promise<void> {
    const c = await this.#ready();
    if (Object.keys(specs.overrides).length === 0) await this.#bounded(c.specs.deleteOne({ _id: specs.battery_id }), 'put specs');
    else await this.#bounded(c.specs.replaceOne({ _id: specs.battery_id }, { specs }, { upsert: true }), 'put specs');
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#client.close();
  }

  /** Bounds an operation in time; driver errors become store errors, secrets removed. */
  #bounded<T>(operation: Promise<T>, what: string): Promise<T> {
    const ms = this.#operationTimeoutMs;
    return withDeadline(operation, ms, () => new StoreUnavailableError(`MongoDB analytics store: ${what} got no answer within ${ms} ms`))
      .catch((error: unknown) => {
        throw this.#storeError(error);
      });
  }

  /** A server's refusal stays an Error (a bug to see in the log); anything else (no server, a timeout) is an outage. */
  #storeError(error: unknown): Error {
    if (error instanceof StoreUnavailableError) return error;
    const message = this.#redact(String((error as Error)?.message ?? error));
    const name = (error as Error)?.name;
    if (!this.#closed && (name === 'MongoServerError' || name === 'MongoBulkWriteError')) return new Error(`MongoDB analytics store: ${message}`);
    return new StoreUnavailableError(`MongoDB analytics store unavailable at ${this.#where}: ${message}`);
  }
}

async function createCollection(db: Db, name: string): Promise<void> {
  try {
    await db.createCollection(name);
  } catch (error) {
    // 48 NamespaceExists: another instance made it first.
    if ((error as { code?: number }).code !== 48) throw error;
  }
}
