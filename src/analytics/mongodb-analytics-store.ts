/**
 * The analytics store on MongoDB (Atlas, or any server of the wire protocol), in the records'
 * database, on a client of its own: `analytics_packs` (one document per pack: its whole state),
 * `analytics_specs` (per-pack overrides) and `analytics_meta`. A pack's state is one document, so
 * each is written whole or not at all on every server; no transaction is needed.
 *
 * Every operation is bounded in time and fails with StoreUnavailableError while the server is away;
 * nothing logged or thrown holds the URI's credentials.
 */
import type { Collection, Db } from 'mongodb';
import { createCollections, MongoSideStore, sideWriteConcern, type MongoSideStoreOptions } from '../store/mongodb-side-store.js';
import type { AnalyticsStore, LoadedAnalytics, PackOverrides } from './analytics-store.js';
import type { PackAnalytics } from './pack-state.js';

export const ANALYTICS_COLLECTIONS = { packs: 'analytics_packs', specs: 'analytics_specs', meta: 'analytics_meta' } as const;

export interface AnalyticsStoreLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface MongoAnalyticsStoreOptions extends MongoSideStoreOptions {
  logger?: AnalyticsStoreLogger;
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

export class MongoAnalyticsStore extends MongoSideStore<Collections> implements AnalyticsStore {
  constructor(options: MongoAnalyticsStoreOptions) {
    super(options, 'battery-monitor-analytics', 'MongoDB analytics store');
  }

  protected async setUp(db: Db): Promise<Collections> {
    const writeConcern = await sideWriteConcern(db, this.operationTimeoutMs);
    await createCollections(db, Object.values(ANALYTICS_COLLECTIONS));
    return {
      packs: db.collection(ANALYTICS_COLLECTIONS.packs, writeConcern),
      specs: db.collection(ANALYTICS_COLLECTIONS.specs, writeConcern),
      meta: db.collection(ANALYTICS_COLLECTIONS.meta, writeConcern),
    };
  }

  async load(): Promise<LoadedAnalytics> {
    const c = await this.ready();
    const [packs, specs, meta] = await this.bounded(
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
    const c = await this.ready();
    const doc = await this.bounded(c.packs.findOne({ _id: batteryId }), 'load');
    return doc?.state;
  }

  async savePacks(packs: readonly PackAnalytics[], writtenAt: number): Promise<void> {
    const c = await this.ready();
    if (packs.length > 0) {
      await this.bounded(
        c.packs.bulkWrite(
          packs.map((state) => ({ replaceOne: { filter: { _id: state.battery_id }, replacement: { state }, upsert: true } })),
          { ordered: false },
        ),
        'save',
      );
    }
    await this.bounded(c.meta.replaceOne({ _id: META_ID }, { written_at: writtenAt }, { upsert: true }), 'save');
  }

  async loadSpecs(): Promise<PackOverrides[]> {
    const c = await this.ready();
    return (await this.bounded(c.specs.find().toArray(), 'load')).map((doc) => doc.specs);
  }

  async putSpecs(specs: PackOverrides): Promise<void> {
    const c = await this.ready();
    if (Object.keys(specs.overrides).length === 0) await this.bounded(c.specs.deleteOne({ _id: specs.battery_id }), 'put specs');
    else await this.bounded(c.specs.replaceOne({ _id: specs.battery_id }, { specs }, { upsert: true }), 'put specs');
  }
}
