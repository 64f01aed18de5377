/**
 * Leases in the store (MongoDB only): a document per piece of work ({_id: name, purpose, owner,
 * expires_at}) in `cluster_leases`, held by one instance at a time and renewed while it lives. An
 * instance takes a lease that is free or expired, or renews its own, in one conditional upsert: the
 * filter matches only such a document, so a lease another instance holds makes the upsert try to
 * insert its _id again, which the unique _id index refuses. A dead instance's leases expire after
 * LEASE_SECONDS and go to whoever asks next (counted in cluster_leases_taken_over_total).
 *
 * Expiry is judged by the clock of the instance that asks: the instances' clocks must agree to well
 * within LEASE_SECONDS (docs/deploy.md).
 */
import type { Collection } from 'mongodb';
import type { CollectorMetrics } from '../collector/metrics.js';
import type { MongoStore } from '../store/mongodb-store.js';
import { within } from './cluster-feed.js';

export const LEASES_COLLECTION = 'cluster_leases';
const OPERATION_TIMEOUT_MS = 10_000;

export type LeasePurpose = 'pack' | 'periodic';

export interface LeaseDocument {
  _id: string;
  purpose: LeasePurpose;
  owner: string;
  /** Unix seconds, by the holder's clock. */
  expires_at: number;
  /** Periodic work: when it last ran (Unix seconds). */
  last_run?: number;
}

export interface LeasesOptions {
  store: Pick<MongoStore, 'cluster'>;
  instanceId: string;
  leaseSeconds: number;
  metrics: Pick<CollectorMetrics, 'leasesHeld' | 'leasesTakenOver'>;
  logger: { info(obj: object, msg?: string): void };
}

export class Leases {
  readonly instanceId: string;
  readonly leaseSeconds: number;
  readonly #store: LeasesOptions['store'];
  readonly #metrics: LeasesOptions['metrics'];
  readonly #log: LeasesOptions['logger'];
  /** The leases this instance holds, by name. */
  readonly #held = new Map<string, LeasePurpose>();

  constructor(options: LeasesOptions) {
    this.instanceId = options.instanceId;
    this.leaseSeconds = options.leaseSeconds;
    this.#store = options.store;
    this.#metrics = options.metrics;
    this.#log = options.logger;
  }

  async #collection(): Promise<Collection<LeaseDocument>> {
    const { db } = await this.#store.cluster();
    return db.collection<LeaseDocument>(LEASES_COLLECTION);
  }

  /** Takes the lease or renews it: its document as now stored when this instance holds it, else undefined. */
  async claim(name: string, purpose: LeasePurpose): Promise<LeaseDocument | undefined> {
    const leases = await this.#collection();
    const now = Date.now() / 1000;
    const expires = now + this.leaseSeconds;
    let before: LeaseDocument | null;
    try {
      before = await within(
        leases.findOneAndUpdate(
          { _id: name, $or: [{ owner: this.instanceId }, { expires_at: { $lte: now } }] },
          { $set: { purpose, owner: this.instanceId, expires_at: expires } },
          { upsert: true, returnDocument: 'before' },
        ),
        OPERATION_TIMEOUT_MS,
        'lease',
      );
    } catch (error) {
      if ((error as { code?: number }).code !== 11000) throw error;
      // Another instance holds it.
      this.#forget(name);
      return undefined;
    }
    if (before !== null && before.owner !== this.instanceId) {
      this.#metrics.leasesTakenOver.inc({ purpose });
      this.#log.info({ lease: name, from: before.owner }, 'cluster: took over an expired lease');
    }
    if (!this.#held.has(name)) {
      this.#held.set(name, purpose);
      this.#metrics.leasesHeld.inc({ purpose });
    }
    return { ...(before ?? {}), _id: name, purpose, owner: this.instanceId, expires_at: expires };
  }

  /**
   * Renews every lease of this purpose this instance holds, in one update; answers the names it no
   * longer holds (another instance took them after they expired: this instance was taken for dead).
   */
  async renewAll(purpose: LeasePurpose): Promise<string[]> {
    const held = [...this.#held].filter(([, of]) => of === purpose).map(([name]) => name);
    if (held.length === 0) return [];
    const leases = await this.#collection();
    const expires = Date.now() / 1000 + this.leaseSeconds;
    const result = await within(
      leases.updateMany({ _id: { $in: held }, owner: this.instanceId }, { $set: { expires_at: expires } }),
      OPERATION_TIMEOUT_MS,
      'lease',
    );
    if (result.matchedCount === held.length) return [];
    const still = await within(leases.find({ _id: { $in: held }, owner: this.instanceId }, { projection: { _id: 1 } }).toArray(), OPERATION_TIMEOUT_MS, 'lease');
    const kept = new Set(still.map((doc) => doc._id));
    const lost = held.filter((name) => !kept.has(name));
    for (const name of lost) this.#forget(name);
    return lost;
  }

  /** Names of the leases of this purpose that have expired: their holder died or left. */
  async expired(purpose: LeasePurpose): Promise<string[]> {
    const leases = await this.#collection();
    const docs = await within(
      leases.find({ purpose, expires_at: { $lte: Date.now() / 1000 } }, { projection: { _id: 1 } }).toArray(),
      OPERATION_TIMEOUT_MS,
      'lease',
    );
    return docs.map((doc) => doc._id);
  }

  /** Sets fields of a lease this instance holds; false when it no longer does. */
  async note(name: string, fields: Pick<LeaseDocument, 'last_run'>): Promise<boolean> {
    const leases = await this.#collection();
    const result = await within(leases.updateOne({ _id: name, owner: this.instanceId }, { $set: fields }), OPERATION_TIMEOUT_MS, 'lease');
    if (result.matchedCount === 0) this.#forget(name);
    return result.matchedCount > 0;
  }

  /** Gives the lease up at once (an instance closing): the next instance to ask takes it. */
  async release(name: string): Promise<void> {
    this.#forget(name);
    const leases = await this.#collection();
    await within(leases.updateOne({ _id: name, owner: this.instanceId }, { $set: { expires_at: 0 } }), OPERATION_TIMEOUT_MS, 'lease');
  }

  /** Gives up every lease of this purpose this instance holds (an instance closing, its work saved). */
  async releaseAll(purpose: LeasePurpose): Promise<void> {
    const held = [...this.#held].filter(([, of]) => of === purpose).map(([name]) => name);
    if (held.length === 0) return;
    for (const name of held) this.#forget(name);
    const leases = await this.#collection();
    await within(leases.updateMany({ _id: { $in: held }, owner: this.instanceId }, { $set: { expires_at: 0 } }), OPERATION_TIMEOUT_MS, 'lease');
  }

  holds(name: string): boolean {
    return this.#held.has(name);
  }

  #forget(name: string): void {
    const purpose = this.#held.get(name);
    if (purpose === undefined) return;
    this.#held.delete(name);
    this.#metrics.leasesHeld.dec({ purpose });
  }
}
