/**
 * Per-pack work in one place at a time (MongoDB only): alarm evaluation and analytics of a pack run
 * on the instance that holds the pack's lease (`pack:<battery_id>` in cluster_leases, leases.ts).
 * Every instance sees every record through the cluster feed; this hands the engines the rows of the
 * packs this instance owns, and claims a pack that nobody holds when its records come by (the first
 * instance to ask gets it). Held leases are renewed every LEASE_SECONDS / 3, in one update; expired
 * ones (a dead instance's) are looked for as often and taken over.
 *
 * A pack taken (new, or from a dead instance) is adopted by each engine: it loads the pack's stored
 * state, reads back from the records store what was stored after it, and then takes the pack's rows
 * from the feed, leaving out those it read back (PackWork). A pack lost (this instance stalled past
 * its lease and another took it) is dropped. Claims start once every engine is attached (start()),
 * with the packs that had records in the last hour and that nobody holds.
 *
 * Packs are not moved between live instances: the first to claim a pack keeps it while it lives.
 */
import type { CommitSubscriber, CommittedRows } from '../ingest/after-commit.js';
import { KIND_NAMES, type KindName } from '../records/kinds.js';
import type { Store, WritePosition } from '../store/store.js';
import type { ClusterFeed } from './cluster-feed.js';
import type { Leases } from './leases.js';

/** What an engine does when this instance takes a pack, or loses it. */
export interface PackWork {
  /**
   * This instance owns the pack from now on: the pack's rows come to the engine's subscriber from
   * this call on (it holds them until the pack's state is loaded and caught up); `fedUpTo` says, at
   * the call, how far the feed had handed records on: those below are read back from the store.
   */
  adopt(batteryId: string, fedUpTo: (kind: KindName) => WritePosition | undefined): Promise<void>;
  /** Another instance owns the pack now: forget it, write nothing more of it. */
  release(batteryId: string): void;
}

export interface OwnershipLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const PREFIX = 'pack:';
/** At start, packs with records this recent are claimed when nobody holds them. */
const RECENT_SECONDS = 3600;

export class PackOwnership {
  readonly #leases: Leases;
  readonly #log: OwnershipLogger;
  readonly #subscribers = new Set<CommitSubscriber>();
  readonly #works: PackWork[] = [];
  readonly #owned = new Set<string>();
  /** Packs another instance holds, with when (Unix seconds) to ask again. */
  readonly #others = new Map<string, number>();
  readonly #claiming = new Set<string>();
  /** Claims and adoptions under way. */
  readonly #pending = new Set<Promise<unknown>>();
  readonly #feed: Pick<ClusterFeed, 'subscribe' | 'caughtUp' | 'readPosition'>;
  readonly #records: Pick<Store, 'batteries'>;
  readonly #unsubscribe: () => void;
  #started = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> = Promise.resolve();
  #problem: string | undefined;

  constructor(options: { feed: Pick<ClusterFeed, 'subscribe' | 'caughtUp' | 'readPosition'>; leases: Leases; records: Pick<Store, 'batteries'>; logger: OwnershipLogger }) {
    this.#feed = options.feed;
    this.#records = options.records;
    this.#leases = options.leases;
    this.#log = options.logger;
    this.#unsubscribe = options.feed.subscribe(this.#onCommit);
  }

  /** The engines' commit source: the rows of the packs this instance owns. */
  subscribe(subscriber: CommitSubscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  attach(work: PackWork): void {
    this.#works.push(work);
  }

  owns(batteryId: string): boolean {
    return this.#owned.has(batteryId);
  }

  /**
   * Resolves once what this instance stored before the call has reached the engines, the packs it
   * brought claimed and adopted: a read of alarms or analytics after a write sees what the write
   * caused. The caller bounds the wait.
   */
  async settled(): Promise<void> {
    await this.#feed.caughtUp();
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #track(promise: Promise<unknown>): void {
    this.#pending.add(promise);
    void promise.finally(() => this.#pending.delete(promise)).catch(() => undefined);
  }

  /** Claims begin: every engine is attached (the app is ready). */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    const periodMs = (this.#leases.leaseSeconds * 1000) / 3;
    this.#timer = setInterval(() => {
      this.#round = this.#round.then(() => this.#renewAndTakeOver());
    }, periodMs);
    this.#timer.unref();
    this.#round = this.#renewAndTakeOver().then(() => this.#claimRecent());
    this.#track(this.#round);
  }

  /**
   * At start: packs with records of the last hour that nobody holds (records stored that no engine
   * saw: a crash between the commit and the evaluation, a pack no instance claimed yet).
   */
  async #claimRecent(): Promise<void> {
    try {
      const since = Date.now() / 1000 - RECENT_SECONDS;
      for (const battery of await this.#records.batteries()) {
        if (this.#closed) return;
        if (battery.last_seen >= since && !this.#owned.has(battery.battery_id) && !this.#claiming.has(battery.battery_id)) await this.#claim(battery.battery_id);
      }
    } catch (error) {
      this.#warn(error);
    }
  }

  readonly #onCommit = (commit: readonly CommittedRows[]): void => {
    if (!this.#started || this.#closed) return;
    const owned: CommittedRows[] = [];
    for (const rows of commit) {
      if (this.#owned.has(rows.batteryId)) owned.push(rows);
      else this.#consider(rows.batteryId);
    }
    if (owned.length === 0) return;
    for (const subscriber of this.#subscribers) {
      try {
        subscriber(owned);
      } catch (error) {
        this.#log.error({ err: error }, 'cluster: a pack subscriber failed');
      }
    }
  };

  #consider(batteryId: string): void {
    if (this.#claiming.has(batteryId) || (this.#others.get(batteryId) ?? 0) > Date.now() / 1000) return;
    this.#track(this.#claim(batteryId));
  }

  async #claim(batteryId: string): Promise<void> {
    this.#claiming.add(batteryId);
    try {
      const lease = await this.#leases.claim(PREFIX + batteryId, 'pack');
      if (lease === undefined) {
        // Held elsewhere: its records are that instance's. Asked again after a lease; a dead holder's
        // lease is found by the takeover round meanwhile.
        this.#others.set(batteryId, Date.now() / 1000 + this.#leases.leaseSeconds);
        return;
      }
      if (this.#closed || this.#owned.has(batteryId)) return;
      this.#others.delete(batteryId);
      const positions = new Map(KIND_NAMES.map((kind) => [kind, this.#feed.readPosition(kind)]));
      for (const work of this.#works) this.#track(work.adopt(batteryId, (kind) => positions.get(kind)));
      this.#owned.add(batteryId);
      this.#log.info({ battery_id: batteryId }, 'cluster: this instance evaluates the pack now');
    } catch (error) {
      this.#warn(error);
    } finally {
      this.#claiming.delete(batteryId);
    }
  }

  async #renewAndTakeOver(): Promise<void> {
    if (this.#closed) return;
    try {
      for (const name of await this.#leases.renewAll('pack')) {
        const batteryId = name.slice(PREFIX.length);
        this.#owned.delete(batteryId);
        for (const work of this.#works) work.release(batteryId);
        this.#log.warn({ battery_id: batteryId }, 'cluster: another instance took the pack over (this one was taken for dead)');
      }
      for (const name of await this.#leases.expired('pack')) {
        const batteryId = name.slice(PREFIX.length);
        if (this.#closed) return;
        if (!this.#owned.has(batteryId) && !this.#claiming.has(batteryId)) await this.#claim(batteryId);
      }
      this.#problem = undefined;
    } catch (error) {
      this.#warn(error);
    }
  }

  #warn(error: unknown): void {
    const message = (error as Error).message;
    if (message !== this.#problem) this.#log.warn({ err: message }, 'cluster: cannot reach the pack leases; retrying');
    this.#problem = message;
  }

  /** Stops claiming and gives the packs up (the engines, closed first, have saved their state). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#unsubscribe();
    await this.#round;
    await this.#leases.releaseAll('pack').catch(() => undefined);
  }
}
