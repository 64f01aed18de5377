/**
 * The analytics engine: keeps each pack's state (pack-state.ts) from its battery-data readings,
 * answers its estimates (estimates.ts), and writes them as battery-performance and
 * battery-prediction records (source `battery_monitor_analytics`) as they change (docs/analytics.md).
 *
 * - Readings are taken in the after-commit stage, per commit, per pack, in timestamp order. A row
 *   older than the newest reading the pack's state has taken (a backfill) is stored by the records
 *   store but not integrated: the integrals run forward in time, and a late row would need the
 *   whole timeline after it redone. It is counted.
 * - Only battery-data is taken: the engine's own records are other kinds, so they never come back to it.
 * - The states are written every CHECKPOINT_MS (those that changed) and at close. A restart loads them
 *   and first takes, from the records store, what was committed after each pack's newest reading and
 *   received before the engine subscribed; commits arriving meanwhile wait in a bounded buffer. The
 *   read-back leaves out what arrived since (received_at): it comes through the buffer, in commit
 *   order, whereas a read of the store can see a later write before an earlier one still in flight
 *   (MongoDB) and would take the earlier one as late. A read-back that fails is retried, not
 *   skipped; the estimates answer 503 until it is done (live()). Each reading is integrated once.
 * - Several instances on MongoDB (`adopted`): the engine takes only the packs this instance holds the
 *   lease of (cluster/pack-ownership.ts), from every instance's records; it takes a pack over from
 *   its saved state the same way (adopt), and answers another instance's pack from its saved state.
 * - Records it writes carry idempotency keys made of the pack, the kind and the count of segments
 *   and cycles behind them: a restart that takes again readings whose records were written stores
 *   nothing twice.
 */
import { Serial } from '../cluster/serial.js';
import { withoutIds, type AfterCommit, type CommittedRows } from '../ingest/after-commit.js';
import { columnIndex, RecordBatch } from '../ingest/record-batch.js';
import type { KindName, RecordInput, StoredRecord } from '../records/kinds.js';
import { MAX_TIMESTAMP, MIN_TIMESTAMP } from '../records/schemas.js';
import { StoreUnavailableError, type Store, type WritePosition } from '../store/store.js';
import { withDeadline } from '../store/deadline.js';
import { Backoff, untilAnswered } from '../ingest/backoff.js';
import type { AnalyticsStore, LoadedAnalytics, PackOverrides } from './analytics-store.js';
import { healthOf, type Health } from './estimates.js';
import { advance, lineOf, newPackAnalytics, type AnalyticsSettings, type PackAnalytics, type PackSpecs, type Reading } from './pack-state.js';
import { effectiveSpecs, type SpecOverrides } from './pack-specs.js';

export const ANALYTICS_SOURCE = 'battery_monitor_analytics';

/**
 * Analytics cannot answer yet (still catching up after a start, closed, or off): the API answers 503
 * with this message, written for clients (it never holds a store's address or error).
 */
export class AnalyticsUnavailableError extends StoreUnavailableError {
  override name = 'AnalyticsUnavailableError';
}
export const CHECKPOINT_MS = 2000;
const KIND: KindName = 'battery-data';
/** Rows held while the engine loads; past it the packs are read back from the store. */
const MAX_BUFFERED_ROWS = 200_000;
const MAX_CATCH_UP_ROUNDS = 10;
/** A pack with no state whose records arrived after the last save is taken from records this much older than it. */
export const REPLAY_LOOKBACK_SECONDS = 3600;
const WAIT_MS = 10_000;
/** How long an estimate waits for what this instance stored to reach the engine (several instances). */
const SETTLE_WAIT_MS = WAIT_MS;
const MONTH_SECONDS = 30.4375 * 86_400;

const VOLTAGE = columnIndex(KIND, 'pack_voltage');
const CURRENT = columnIndex(KIND, 'pack_current');
const TEMP = columnIndex(KIND, 'cell_temp');

export interface EngineLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Where the engine's records go: the ingest sink every producer uses. */
export interface RecordSubmitter {
  submit(batch: RecordBatch): Promise<string[]>;
}

export interface AnalyticsEngineOptions {
  store: AnalyticsStore;
  records: Pick<Store, 'exportRange' | 'batteries'>;
  afterCommit: Pick<AfterCommit, 'subscribe'>;
  ingest: RecordSubmitter;
  defaults: PackSpecs;
  settings: AnalyticsSettings;
  logger?: EngineLogger;
  /** Server clock, Unix seconds (tests). */
  clock?: () => number;
  checkpointMs?: number;
  /**
   * Several instances (cluster/pack-ownership.ts): the engine holds only the packs this instance
   * owns, each taken through adopt() and dropped through release(); none is loaded or read back at
   * start, and the estimates of a pack another instance holds are answered from its saved state.
   */
  adopted?: boolean;
  /** Several instances: resolves once what this instance stored so far has been taken (estimates wait for it, bounded). */
  settled?: () => Promise<void>;
  /** Several instances: called once a pack's specs changed here are stored; the others reload them (cluster/cluster-sync.ts). */
  specsChanged?: () => Promise<void>;
}

interface CatchUp {
  batteryId: string;
  /** Rows newer than this are taken. */
  after: number;
  /** A pack adopted: only what the cluster feed had handed on before (the rest comes as commits). */
  writtenBefore?: WritePosition | undefined;
}

interface Output {
  kind: 'battery-performance' | 'battery-prediction';
  input: RecordInput;
  key: string;
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    setTimeout(resolve, ms).unref();
  });

export class AnalyticsEngine {
  readonly #store: AnalyticsStore;
  readonly #records: AnalyticsEngineOptions['records'];
  readonly #ingest: RecordSubmitter;
  readonly #defaults: PackSpecs;
  readonly #settings: AnalyticsSettings;
  readonly #log: EngineLogger | undefined;
  readonly #clock: () => number;
  readonly #checkpointMs: number;

  #phase: 'loading' | 'live' | 'closed' = 'loading';
  readonly #packs = new Map<string, PackAnalytics>();
  readonly #overrides = new Map<string, PackOverrides>();
  /** Spec edits here and reloads of other instances' edits, one at a time (cluster/serial.ts). */
  readonly #specEdits = new Serial();
  readonly #dirty = new Set<string>();
  #writtenAt: number | undefined;
  #saving: Promise<void> | undefined;
  #checkpointTimer: NodeJS.Timeout | undefined;

  #buffer: (readonly CommittedRows[])[] = [];
  #bufferedRows = 0;
  #overflowed = false;
  readonly #missed = new Set<string>();
  readonly #adopted: boolean;
  readonly #settled: (() => Promise<void>) | undefined;
  /** Packs being adopted: their commits, held until the state is loaded and caught up. */
  readonly #adopting = new Map<string, CommittedRows[]>();
  readonly #specsChanged: (() => Promise<void>) | undefined;

  #outbox: Output[] = [];
  #submitting: Promise<void> | undefined;
  #submitScheduled = false;
  #submitTimer: NodeJS.Timeout | undefined;
  readonly #backoff = new Backoff({ minMs: 200, maxMs: 10_000 });

  readonly #unsubscribe: () => void;
  /** Server time (received_at's clock) when the engine subscribed: records received since reach it as commits. */
  readonly #subscribedAt: number;
  readonly #loaded: Promise<void>;
  readonly #live: Promise<void>;
  #firstFailed!: () => void;
  readonly #firstFailure = new Promise<void>((resolve) => (this.#firstFailed = resolve));
  #signalClosed!: () => void;
  readonly #closedSignal = new Promise<void>((resolve) => (this.#signalClosed = resolve));

  constructor(options: AnalyticsEngineOptions) {
    this.#store = options.store;
    this.#records = options.records;
    this.#ingest = options.ingest;
    this.#defaults = options.defaults;
    this.#settings = options.settings;
    this.#log = options.logger;
    this.#clock = options.clock ?? (() => Date.now() / 1000);
    this.#checkpointMs = options.checkpointMs ?? CHECKPOINT_MS;
    this.#adopted = options.adopted ?? false;
    this.#settled = options.settled;
    this.#specsChanged = options.specsChanged;
    // From the start, so that no commit goes by unseen while the state loads.
    this.#subscribedAt = Date.now() / 1000;
    this.#unsubscribe = options.afterCommit.subscribe(this.#onCommit);
    this.#loaded = this.#load();
    this.#live = this.#loaded.then(() => this.#catchUp());
    this.#loaded.catch(() => undefined);
    this.#live.catch(() => undefined);
  }

  /** Resolves once readings are taken live: the states loaded and what was committed before taken. */
  live(): Promise<void> {
    return this.#live;
  }

  /** Resolves once live, or once the first attempt to load failed (a MongoDB server away at start). */
  started(): Promise<void> {
    return Promise.race([this.#live, this.#firstFailure]);
  }

  #isClosed(): boolean {
    return this.#phase === 'closed';
  }

  // ---- API ---------------------------------------------------------------------------------

  /** A pack's estimates; null when the engine has taken no reading of it. */
  async health(batteryId: string): Promise<Health | null> {
    await this.#whenLive();
    // Several instances: what this instance stored reaches the engine through the store, a poll later.
    if (this.#settled !== undefined) await Promise.race([this.#settled().catch(() => undefined), sleep(SETTLE_WAIT_MS)]);
    let state = this.#packs.get(batteryId);
    // Another instance holds the pack: its state as last saved (at most a checkpoint old).
    if (state === undefined && this.#adopted) {
      try {
        state = await this.#store.loadPack(batteryId);
      } catch {
        throw new AnalyticsUnavailableError('The analytics store is not reachable; try again shortly');
      }
    }
    return state === undefined ? null : healthOf(state, this.specsOf(batteryId));
  }

  /** A pack's estimates before any reading: every one null, with the reason. */
  emptyHealth(batteryId: string): Health {
    return healthOf(newPackAnalytics(batteryId), this.specsOf(batteryId));
  }

  specsOf(batteryId: string): PackSpecs {
    return effectiveSpecs(this.#defaults, this.#overrides.get(batteryId)?.overrides);
  }

  get defaults(): PackSpecs {
    return this.#defaults;
  }

  async overridesOf(batteryId: string): Promise<PackOverrides | undefined> {
    await this.#whenLoaded();
    return this.#overrides.get(batteryId);
  }

  /** Replaces a pack's overrides; they apply from its next reading (and to the estimates at once). */
  async putSpecs(batteryId: string, overrides: SpecOverrides): Promise<PackOverrides> {
    await this.#whenLoaded();
    return this.#specEdits.run(() => this.#putSpecs(batteryId, overrides));
  }

  async #putSpecs(batteryId: string, overrides: SpecOverrides): Promise<PackOverrides> {
    const entry: PackOverrides = { battery_id: batteryId, overrides, updated_at: this.#clock() };
    await this.#store.putSpecs(entry);
    if (Object.keys(overrides).length === 0) this.#overrides.delete(batteryId);
    else this.#overrides.set(batteryId, entry);
    await this.#specsChanged?.();
    return entry;
  }

  /** Several instances: every pack's specs as stored, another instance having changed some; they apply from the next reading. */
  async reloadSpecs(): Promise<void> {
    await this.#whenLoaded();
    await this.#specEdits.run(async () => {
      const stored = await this.#store.loadSpecs();
      if (this.#isClosed()) return;
      this.#overrides.clear();
      for (const entry of stored) this.#overrides.set(entry.battery_id, entry);
    });
  }

  // ---- readings ----------------------------------------------------------------------------

  readonly #onCommit = (commit: readonly CommittedRows[]): void => {
    if (this.#adopting.size > 0) {
      const held = commit.filter((rows) => rows.kind !== KIND || this.#adopting.get(rows.batteryId)?.push(rows) === undefined);
      if (held.length < commit.length) commit = held;
    }
    if (this.#phase === 'live') {
      for (const rows of commit) if (rows.kind === KIND) this.#take(rows.batteryId, rows.rows);
      this.#afterTaking();
      return;
    }
    if (this.#isClosed()) return;
    const ours = commit.filter((rows) => rows.kind === KIND);
    if (ours.length === 0) return;
    const count = ours.reduce((n, rows) => n + rows.rows.length, 0);
    if (!this.#overflowed && this.#bufferedRows + count <= MAX_BUFFERED_ROWS) {
      this.#buffer.push(ours);
      this.#bufferedRows += count;
      return;
    }
    if (!this.#overflowed) {
      this.#overflowed = true;
      for (const held of this.#buffer) for (const rows of held) this.#missed.add(rows.batteryId);
      this.#buffer = [];
      this.#bufferedRows = 0;
    }
    for (const rows of ours) this.#missed.add(rows.batteryId);
  };

  #packOf(batteryId: string): PackAnalytics {
    let pack = this.#packs.get(batteryId);
    if (pack === undefined) {
      pack = newPackAnalytics(batteryId);
      this.#packs.set(batteryId, pack);
    }
    return pack;
  }

  /** Takes a pack's battery-data rows, in timestamp order. Straight from the batch's columns: this runs for every row at full ingest rate. */
  #take(batteryId: string, batch: RecordBatch): void {
    const n = batch.length;
    if (n === 0) return;
    const { numbers, width } = batch;
    const pack = this.#packOf(batteryId);
    const specs = this.specsOf(batteryId);
    const now = this.#clock();
    const reading: Reading = { timestamp: 0, pack_voltage: 0, pack_current: 0, cell_temp: NaN };
    for (let row = 0; row < n; row++) {
      const at = row * width;
      const timestamp = numbers[at]!;
      if (pack.newest !== null && timestamp <= pack.newest) {
        // Equal: a second reading of the same instant adds nothing to an integral.
        if (timestamp < pack.newest) pack.backfill++;
        continue;
      }
      reading.timestamp = timestamp;
      reading.pack_voltage = numbers[at + VOLTAGE]!;
      reading.pack_current = numbers[at + CURRENT]!;
      reading.cell_temp = numbers[at + TEMP]!;
      this.#advance(pack, reading, specs, now);
    }
    this.#dirty.add(batteryId);
  }

  #advance(pack: PackAnalytics, reading: Reading, specs: PackSpecs, now: number): void {
    const cycle = 2 * specs.nominal_capacity_ah;
    const before = pack.ah_in + pack.ah_out;
    const segment = advance(pack, reading, specs, this.#settings, now);
    // A whole equivalent cycle passed: health may be unchanged, its record says the cycle count.
    if (segment || Math.floor((pack.ah_in + pack.ah_out) / cycle) > Math.floor(before / cycle)) this.#emit(pack, specs, reading.timestamp);
  }

  /** The pack's estimates as records: performance once health is known, prediction once remaining life is. */
  #emit(pack: PackAnalytics, specs: PackSpecs, timestamp: number): void {
    const health = healthOf(pack, specs);
    const soh = health.soh.value;
    if (soh === null || pack.last === null) return;
    const cycles = Math.floor(health.equivalent_cycles.value ?? 0);
    const id = `${ANALYTICS_SOURCE}:${pack.battery_id}:${pack.segments}:${cycles}`;
    const soc = health.soc.value;
    const common = { timestamp, source: ANALYTICS_SOURCE, battery_id: pack.battery_id };
    this.#outbox.push({
      kind: 'battery-performance',
      key: `${id}:performance`,
      input: {
        ...common,
        pack_voltage: pack.last.pack_voltage,
        pack_current: pack.last.pack_current,
        cell_temp: pack.last.cell_temp ?? 0,
        // Charge left in percent of nominal, as the original's predictor sent it; the health alone while the state of charge is unknown.
        capacity_remaining: round(soc === null ? soh : (soc * soh) / 100, 3),
        cycle_count: cycles,
        age_months: round((timestamp - (pack.first_at ?? timestamp)) / MONTH_SECONDS, 3),
        health_score: round(soh, 3),
      },
    });
    const rulCycles = health.rul_cycles.value;
    if (rulCycles === null) return;
    const fade = degradationPer100Cycles(pack);
    const hoursPerCycle = cycles > 0 ? (timestamp - (pack.first_at ?? timestamp)) / 3600 / (health.equivalent_cycles.value ?? 1) : 0;
    this.#outbox.push({
      kind: 'battery-prediction',
      key: `${id}:prediction`,
      input: {
        ...common,
        remaining_life_hours: round(health.rul_hours.value ?? rulCycles * hoursPerCycle, 1),
        remaining_cycles: round(rulCycles, 1),
        degradation_rate: round(fade ?? 0, 4),
      },
    });
  }

  #afterTaking(): void {
    if (this.#outbox.length > 0) this.#scheduleSubmit();
  }

  // ---- records out -------------------------------------------------------------------------

  #scheduleSubmit(): void {
    if (this.#submitScheduled || this.#submitTimer !== undefined || this.#submitting !== undefined) return;
    this.#submitScheduled = true;
    // One turn of the event loop: the records of commits handed on together go in one batch per kind.
    setImmediate(() => {
      this.#submitScheduled = false;
      this.#submit();
    });
  }

  #submit(): void {
    if (this.#submitting !== undefined || this.#outbox.length === 0) return;
    const taken = this.#outbox;
    this.#outbox = [];
    const received = this.#clock();
    const batches = new Map<Output['kind'], RecordBatch>();
    for (const output of taken) {
      let batch = batches.get(output.kind);
      if (batch === undefined) batches.set(output.kind, (batch = new RecordBatch(output.kind)));
      batch.append(output.input, received, output.key);
    }
    this.#submitting = Promise.all([...batches.values()].map((batch) => this.#ingest.submit(batch))).then(
      () => {
        this.#submitting = undefined;
        this.#backoff.reset();
        if (this.#outbox.length > 0) this.#scheduleSubmit();
      },
      (error: unknown) => {
        this.#submitting = undefined;
        // Keyed: a batch of the two that was stored is not stored twice when sent again.
        this.#outbox = [...taken, ...this.#outbox];
        if (this.#isClosed()) return;
        this.#log?.warn({ err: (error as Error).message, records: taken.length }, 'analytics: the ingest sink did not take the estimates; retrying');
        this.#submitTimer = setTimeout(() => {
          this.#submitTimer = undefined;
          this.#submit();
        }, this.#backoff.next());
        this.#submitTimer.unref();
      },
    );
  }

  // ---- start -------------------------------------------------------------------------------

  async #whenLoaded(): Promise<void> {
    await this.#bounded(this.#loaded, 'The analytics store is not reachable yet; try again shortly');
  }

  /** Estimates wait for the catch-up (bounded): before it, a restarted pack would answer its old state. */
  async #whenLive(): Promise<void> {
    await this.#bounded(this.#live, 'Analytics is still catching up after the start; try again shortly');
  }

  async #bounded(promise: Promise<void>, message: string): Promise<void> {
    if (this.#isClosed()) throw new AnalyticsUnavailableError('Analytics is closed');
    await withDeadline(promise, WAIT_MS, () => new AnalyticsUnavailableError(message));
  }

  async #load(): Promise<void> {
    const loaded = await untilAnswered(() => this.#store.load(), {
      warning: 'analytics: cannot load the state yet; retrying',
      log: this.#log,
      closed: () => this.#isClosed(),
      closing: this.#closedSignal,
      failed: () => this.#firstFailed(),
    });
    if (loaded === undefined) throw new AnalyticsUnavailableError('Analytics is closed');
    this.#install(loaded);
  }

  #install(loaded: LoadedAnalytics): void {
    if (!this.#adopted) for (const pack of loaded.packs) this.#packs.set(pack.battery_id, pack);
    for (const entry of loaded.specs) this.#overrides.set(entry.battery_id, entry);
    this.#writtenAt = loaded.writtenAt;
    this.#log?.info({ store: this.#store.name, packs: this.#packs.size }, 'analytics: state loaded');
  }

  /** Takes what was committed while the engine was not running or loading, then what came meanwhile, and goes live. */
  async #catchUp(): Promise<void> {
    await this.#readBack(await this.#catchUpTargets());
    for (let round = 0; this.#overflowed && round < MAX_CATCH_UP_ROUNDS && this.#phase !== 'closed'; round++) {
      const missed = [...this.#missed];
      this.#missed.clear();
      this.#overflowed = false;
      await this.#readBack(missed.map((batteryId) => ({ batteryId, after: this.#packs.get(batteryId)?.newest ?? this.#clock() - REPLAY_LOOKBACK_SECONDS })));
    }
    if (this.#isClosed()) return;
    if (this.#overflowed) {
      this.#log?.warn({ packs: this.#missed.size }, 'analytics: commits kept overflowing while catching up; some readings stored during start-up are not taken');
      this.#missed.clear();
      this.#overflowed = false;
    }
    // In one go, with no await: no commit can come between the buffer and live evaluation.
    const buffered = this.#buffer;
    this.#buffer = [];
    this.#bufferedRows = 0;
    for (const commit of buffered) for (const rows of commit) this.#take(rows.batteryId, rows.rows);
    this.#phase = 'live';
    this.#afterTaking();
    this.#checkpointTimer = setInterval(() => void this.#checkpoint(), this.#checkpointMs);
    this.#checkpointTimer.unref();
  }

  /**
   * Every pack with state is read back from its newest reading, whatever batteries() says: on MongoDB
   * its counts are eventually right only (mongodb-summary.ts), and a pack it showed as up to date would
   * lose the readings committed after the last save. batteries() only finds the packs with no state yet.
   */
  async #catchUpTargets(): Promise<CatchUp[]> {
    // Packs come through adopt().
    if (this.#adopted) return [];
    const targets = new Map<string, CatchUp>();
    for (const pack of this.#packs.values()) if (pack.newest !== null) targets.set(pack.battery_id, { batteryId: pack.battery_id, after: pack.newest });
    // A store never written to: analytics starts with the next commits (docs/analytics.md).
    if (this.#writtenAt === undefined) return [];
    const horizon = this.#writtenAt - REPLAY_LOOKBACK_SECONDS;
    const batteries = await this.#untilAnswered(() => this.#records.batteries(), 'cannot list the packs to catch up; retrying');
    for (const battery of batteries ?? []) {
      const lastSeen = battery.last_seen_by_kind[KIND];
      if (lastSeen !== undefined && lastSeen >= horizon && !targets.has(battery.battery_id)) {
        targets.set(battery.battery_id, { batteryId: battery.battery_id, after: horizon });
      }
    }
    return [...targets.values()];
  }

  /**
   * Reads back each pack's readings after `after`. A read that fails (a store away or too slow to
   * answer) is retried from the pack's newest reading taken, never skipped: going live without them
   * would leave a hole in the integrals for good. Meanwhile the estimates answer 503 and commits wait.
   */
  async #readBack(targets: readonly CatchUp[], seen?: Set<string>): Promise<void> {
    let rows = 0;
    for (const { batteryId, after, writtenBefore } of targets) {
      const pack = this.#packOf(batteryId);
      const specs = this.specsOf(batteryId);
      const reading: Reading = { timestamp: 0, pack_voltage: 0, pack_current: 0, cell_temp: NaN };
      await this.#untilAnswered(async () => {
        // Readings at or before the newest taken were taken by an attempt before this one.
        const from = Math.max(after, pack.newest ?? after);
        const range = { from, to: MAX_TIMESTAMP + 1, batteryId, ...(writtenBefore === undefined ? {} : { writtenBefore }) };
        for await (const record of this.#records.exportRange(KIND, range)) {
          if (this.#isClosed()) return;
          if (record.timestamp <= after || (pack.newest !== null && record.timestamp <= pack.newest)) continue;
          if (seen === undefined ? record.received_at >= this.#subscribedAt : seen.has(record._id)) continue;
          seen?.add(record._id);
          readingOf(record, reading);
          this.#advance(pack, reading, specs, this.#clock());
          this.#dirty.add(batteryId);
          rows++;
        }
      }, `cannot read back the readings of ${batteryId} stored before the start yet; retrying`);
      this.#afterTaking();
    }
    if (rows > 0) this.#log?.info({ records: rows }, 'analytics: took readings stored before the start');
  }

  /**
   * Takes a pack this instance owns from now on (cluster/pack-ownership.ts): its saved state, then its
   * readings stored after it, then its commits, those read back left out. Each reading is integrated
   * once: the state says how far it got.
   */
  async adopt(batteryId: string, fedUpTo: (kind: KindName) => WritePosition | undefined = () => undefined): Promise<void> {
    if (this.#isClosed() || this.#packs.has(batteryId) || this.#adopting.has(batteryId)) return;
    const held: CommittedRows[] = [];
    this.#adopting.set(batteryId, held);
    // Split by write position, taken together with the hold (see the alarm engine's adopt).
    const writtenBefore = fedUpTo(KIND);
    await this.#live.catch(() => undefined);
    const stored = await this.#untilAnswered(() => this.#store.loadPack(batteryId), `cannot load the state of ${batteryId} yet; retrying`);
    if (this.#isClosed() || this.#adopting.get(batteryId) !== held) return;
    if (stored !== undefined) this.#packs.set(batteryId, stored);
    // A pack with no saved state has never been integrated by any instance: all its readings (below the
    // feed's position), whatever their time (a device's backlog may be the first the cluster sees of it).
    const seen = new Set<string>();
    await this.#readBack([{ batteryId, after: stored?.newest ?? MIN_TIMESTAMP - 1, writtenBefore }], seen);
    if (this.#isClosed() || this.#adopting.get(batteryId) !== held) return;
    // In one go, with no await: the pack's next commits are taken as they come.
    this.#adopting.delete(batteryId);
    for (const commit of held) this.#take(batteryId, withoutIds(commit, seen));
    this.#afterTaking();
  }

  /** Another instance owns the pack now: its state is dropped here, unsaved. */
  release(batteryId: string): void {
    this.#adopting.delete(batteryId);
    this.#packs.delete(batteryId);
    this.#dirty.delete(batteryId);
  }

  #untilAnswered<T>(attempt: () => Promise<T>, warning: string): Promise<T | undefined> {
    return untilAnswered(attempt, { warning: `analytics: ${warning}`, log: this.#log, closed: () => this.#isClosed(), closing: this.#closedSignal });
  }

  // ---- saving ------------------------------------------------------------------------------

  /** Writes the changed packs' states; one save at a time, a failed one retried at the next checkpoint. */
  async #checkpoint(): Promise<void> {
    if (this.#saving !== undefined || this.#dirty.size === 0) return;
    const ids = [...this.#dirty];
    this.#dirty.clear();
    // Copies: the live states change on while the save is under way (MongoDB).
    const packs = ids.map((id) => structuredClone(this.#packs.get(id)!));
    this.#saving = this.#store.savePacks(packs, this.#clock()).then(
      () => {
        this.#saving = undefined;
      },
      (error: unknown) => {
        this.#saving = undefined;
        for (const id of ids) this.#dirty.add(id);
        this.#log?.warn({ err: (error as Error).message }, 'analytics: cannot save the state; retrying at the next checkpoint');
      },
    );
    return this.#saving;
  }

  /** Stops taking readings, sends the estimates not yet sent and saves the states (one last attempt), closes the store. */
  async close(): Promise<void> {
    if (this.#isClosed()) return;
    this.#phase = 'closed';
    this.#signalClosed();
    this.#unsubscribe();
    clearInterval(this.#checkpointTimer);
    clearTimeout(this.#submitTimer);
    this.#submitTimer = undefined;
    await this.#live.catch(() => undefined);
    await this.#submitting;
    if (this.#outbox.length > 0) {
      this.#submit();
      await this.#submitting;
    }
    await this.#saving;
    await this.#checkpoint();
    if (this.#dirty.size > 0) this.#log?.error({ packs: this.#dirty.size }, 'analytics: closing with states not saved; their readings are taken again at the next start');
    await this.#store.close();
  }
}

function readingOf(record: StoredRecord, reading: Reading): void {
  reading.timestamp = record.timestamp;
  reading.pack_voltage = record.pack_voltage as number;
  reading.pack_current = record.pack_current as number;
  reading.cell_temp = typeof record.cell_temp === 'number' ? record.cell_temp : NaN;
}

/** State of health lost per 100 equivalent cycles, in percentage points, from the capacity fit. */
function degradationPer100Cycles(pack: PackAnalytics): number | null {
  const line = lineOf(pack.fit_throughput);
  // slope: Ah of capacity per Ah of throughput / 2, and one cycle is a nominal capacity of it: SoH points per cycle x 100.
  return line === null ? null : -line.slope * 100 * 100;
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;
