/**
 * The alarm engine: judges every stored reading against the rules, keeps each alarm's lifecycle, and
 * stores what changed (docs/alarms.md).
 *
 * - Evaluation runs in the after-commit stage, on the event loop: per commit, per kind and pack, rows
 *   in timestamp order, from state held in memory (per rule and pack: the open alarm, the debounce,
 *   the rate window). A row older than the newest row already evaluated for its pack and kind (a
 *   backfill) is skipped: it neither raises, escalates, steps down nor clears an alarm.
 * - No-data rules are judged by a timer: a pack silent (server time) past a level raises; its next
 *   reading clears.
 * - Writes leave the event loop's hot path: changes queue, and one change set at a time goes to the
 *   alarm store, everything queued meanwhile in the next. Alarm changes are written at once; the
 *   evaluation checkpoint alone (the packs' newest timestamps, debounce and rate windows) every
 *   CHECKPOINT_MS. A pack's state is always stored with the alarm changes that brought it there.
 * - A restart loads the state and first evaluates, from the records store, what was committed after
 *   the last checkpoint; commits arriving meanwhile wait in a bounded buffer. Nothing is raised twice
 *   (the stored state always matches the stored alarms) and no clear is lost.
 * - Several instances on MongoDB (`adopted`): the engine evaluates only the packs this instance holds
 *   the lease of (cluster/pack-ownership.ts), from every instance's records; it takes a pack over
 *   from its stored state the same way (adopt), and reads wait until what this instance stored has
 *   come round through the store and been evaluated (settled, bounded). Rules changed through
 *   another instance are reloaded (reloadRules, cluster/cluster-sync.ts), and an open alarm of a pack
 *   another instance holds is acknowledged there (forwardAcknowledge).
 */
import { randomUUID } from 'node:crypto';
import type { CollectorMetrics } from '../collector/metrics.js';
import { withoutIds, type AfterCommit, type CommittedRows } from '../ingest/after-commit.js';
import { columnIndex, RecordBatch } from '../ingest/record-batch.js';
import { KIND_NAMES, type KindName, type StoredRecord } from '../records/kinds.js';
import { MAX_TIMESTAMP, MIN_TIMESTAMP } from '../records/schemas.js';
import type { BatterySpecs } from '../specs.js';
import { type BatterySummary, StoreUnavailableError, type Store, type WritePosition } from '../store/store.js';
import { withDeadline } from '../store/deadline.js';
import { Backoff, untilAnswered } from '../ingest/backoff.js';
import type { AlarmQuery, AlarmStore, AlarmWithEvents, ChangeSet, LoadedState, RuleChange } from './alarm-store.js';
import { assess, severityOf, type Transition } from './evaluator.js';
import {
  rankOf,
  type Alarm,
  type AlarmChange,
  type AlarmEvent,
  type AlarmEventType,
  type AlarmRule,
  type ClearReason,
  type PackState,
  type RuleSettings,
  type RuleState,
  type Severity,
} from './model.js';
import type { Notification, Webhook } from './notifications.js';
import { defaultRules, editEffect, newRule, sameSettings, watches } from './rules.js';

/** How often the evaluation checkpoint is written while nothing but it changed. */
export const CHECKPOINT_MS = 2000;
/** Records held while the engine loads (commits go on meanwhile); past it they are read back from the store. */
const MAX_BUFFERED_ROWS = 200_000;
/** Rounds of reading back what overflowed the buffer before evaluating live anyway. */
const MAX_CATCH_UP_ROUNDS = 10;
/**
 * A pack the engine holds no state of, whose records arrived after the last write: it is evaluated
 * from records this much older than that write (its records' clocks need not match the server's).
 */
export const REPLAY_LOOKBACK_SECONDS = 3600;
/** Rows handed to the evaluator at once while reading back from the records store. */
const REPLAY_CHUNK = 1000;
export const MAX_RULES = 1000;
/** How long an API change waits for the store before answering 503 (the change stays queued). */
const WRITE_WAIT_MS = 10_000;
/** How long a read waits for queued changes to be written, so that it sees them. */
const READ_WAIT_MS = 2000;

export interface EngineLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface AlarmEngineOptions {
  store: AlarmStore;
  /** Where records committed before a restart and not yet evaluated are read back from. */
  records: Pick<Store, 'exportRange' | 'batteries'>;
  afterCommit: Pick<AfterCommit, 'subscribe'>;
  specs: BatterySpecs;
  noDataSeconds: number;
  metrics: Pick<CollectorMetrics, 'alarmsOpen' | 'alarmEvents'>;
  logger?: EngineLogger;
  /** Server clock, Unix seconds (tests). */
  clock?: () => number;
  checkpointMs?: number;
  notifications?: NotificationOutbox;
  /**
   * Several instances (cluster/pack-ownership.ts): the engine holds only the packs this instance
   * owns, each taken through adopt() (its stored state, then what was stored after it) and dropped
   * through release(); none is loaded or read back at start.
   */
  adopted?: boolean;
  /** Several instances: resolves once what this instance stored so far has been evaluated (reads wait for it, bounded). */
  settled?: () => Promise<void>;
  /** Several instances: called once rule changes made here are stored; the others reload the rules (cluster/cluster-sync.ts). Never throws. */
  rulesChanged?: () => Promise<void>;
  /**
   * Several instances: has the instance that owns the alarm's pack acknowledge it (cluster/cluster-sync.ts),
   * for an open alarm this instance does not hold; throws when no owner answers in time.
   */
  forwardAcknowledge?: (alarm: Alarm, by: string, note: string | null) => Promise<AcknowledgeResult>;
}

/**
 * Webhook notifications (webhook-dispatcher.ts): the engine stores the outbox rows of each change set
 * with it, and hands them over once stored.
 */
export interface NotificationOutbox {
  /** The stored webhooks and undelivered notifications, as the state loads. */
  loaded(webhooks: readonly Webhook[], outbox: readonly Notification[]): void;
  outboxFor(changes: readonly AlarmChange[], ruleOf: (id: string) => AlarmRule | undefined, now: number): Notification[];
  stored(outbox: readonly Notification[]): void;
}

/** Refused: too many rules already. */
export class RuleLimitError extends Error {
  override name = 'RuleLimitError';
}

export type AcknowledgeResult =
  | { status: 'acknowledged'; alarm: AlarmWithEvents }
  | { status: 'not_found' }
  | { status: 'cleared' | 'already_acknowledged'; alarm: Alarm };

/** A rule ready for the hot loop: where its field sits in a batch's rows, and the range of quiet values. */
interface Judged {
  rule: AlarmRule;
  /** Index of the field among the kind's numeric columns. */
  column: number;
  /** A value within [lower, upper] past no level: with no alarm open and no debounce running, nothing to judge. */
  lower: number;
  upper: number;
  /** Judged through its window whatever the value (rate_of_rise). */
  windowed: boolean;
}

/** Records read back from the records store, as a batch: one evaluation path for commits and catch-up alike. */
function batchOf(kind: KindName, records: readonly StoredRecord[]): RecordBatch {
  const batch = new RecordBatch(kind, records.length);
  for (const record of records) batch.append(record, record.received_at);
  return batch;
}

/** A kind and pack to read back from the records store: rows from `from` on, evaluated when newer than `after`. */
interface CatchUp {
  kind: KindName;
  batteryId: string;
  from: number;
  after: number;
  /** A pack adopted: only what the cluster feed had handed on before (the rest comes as commits). */
  writtenBefore?: WritePosition | undefined;
}

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

/** What waits to be written. */
interface Queue {
  rules: Map<string, RuleChange>;
  changes: AlarmChange[];
  waiters: Waiter[];
}

const emptyQueue = (): Queue => ({ rules: new Map(), changes: [], waiters: [] });

const newState = (): RuleState => ({ seq: 0, pending_since: null, window: null, open: null });

/** A pack's state as stored: rule states with something in them, copied (the live one changes on). */
function snapshotOf(pack: PackState): PackState {
  const rules: Record<string, RuleState> = {};
  for (const [id, state] of Object.entries(pack.rules)) {
    if (state.seq === 0 && state.pending_since === null && state.window === null && state.open === null) continue;
    rules[id] = {
      seq: state.seq,
      pending_since: state.pending_since,
      window: state.window === null ? null : state.window.map((slice) => ({ ...slice })),
      open: state.open === null ? null : { ...state.open },
    };
  }
  const kinds: PackState['kinds'] = {};
  for (const kind of KIND_NAMES) {
    const progress = pack.kinds[kind];
    if (progress !== undefined) kinds[kind] = { ...progress };
  }
  return { battery_id: pack.battery_id, kinds, rules };
}

const roundMs = (seconds: number) => Math.round(seconds * 1000) / 1000;

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    setTimeout(resolve, ms).unref();
  });

export class AlarmEngine {
  readonly #store: AlarmStore;
  readonly #records: AlarmEngineOptions['records'];
  readonly #specs: BatterySpecs;
  readonly #noDataSeconds: number;
  readonly #metrics: AlarmEngineOptions['metrics'];
  readonly #log: EngineLogger | undefined;
  readonly #clock: () => number;
  readonly #checkpointMs: number;
  readonly #notifications: NotificationOutbox | undefined;

  #phase: 'loading' | 'live' | 'closed' = 'loading';
  readonly #rules = new Map<string, AlarmRule>();
  /** Enabled rules judged per reading, by kind. */
  #judged = new Map<KindName, Judged[]>();
  /** Enabled no_data rules. */
  #silences: AlarmRule[] = [];
  readonly #packs = new Map<string, PackState>();
  /** Open alarms by id: where their state is. */
  readonly #open = new Map<string, { pack: PackState; ruleId: string }>();
  readonly #openCounts: Record<Severity, number> = { warning: 0, critical: 0 };
  #seeded: string[] = [];
  #seededChanged = false;
  /** Server time evaluation went live: a no-data silence is measured from no earlier. */
  #startedAt = 0;
  /** Server time (received_at's clock) when the engine subscribed: records received since reach it as commits. */
  readonly #subscribedAt: number;
  /** Server time of the last change set stored before this start. */
  #writtenAt: number | undefined;

  #queue = emptyQueue();
  /** Packs whose state changed since it was last written. */
  readonly #dirty = new Set<string>();
  #writing: Promise<void> | undefined;
  #flushScheduled = false;
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #backoff = new Backoff({ minMs: 200, maxMs: 10_000 });
  #failing = false;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;

  /** While loading: the commits that arrived, in order, until they overflow; then the packs they were for. */
  #buffer: (readonly CommittedRows[])[] = [];
  #bufferedRows = 0;
  #overflowed = false;
  readonly #missed = new Map<string, { kind: KindName; batteryId: string; oldest: number }>();
  readonly #adopted: boolean;
  readonly #settled: (() => Promise<void>) | undefined;
  /** Packs being adopted: their commits, held until the state is loaded and caught up. */
  readonly #adopting = new Map<string, CommittedRows[]>();
  readonly #rulesChanged: (() => Promise<void>) | undefined;
  readonly #forwardAcknowledge: AlarmEngineOptions['forwardAcknowledge'];
  /** Counts the rule changes made here: a reload of the rules that one overtook is read again. */
  #ruleChanges = 0;
  /** A change set with rule changes is being written. */
  #writingRules = false;

  readonly #unsubscribe: () => void;
  readonly #listeners = new Set<(changes: readonly AlarmChange[]) => void>();
  readonly #loaded: Promise<void>;
  readonly #live: Promise<void>;
  #firstFailed!: () => void;
  readonly #firstFailure = new Promise<void>((resolve) => (this.#firstFailed = resolve));
  #signalClosed!: () => void;
  readonly #closedSignal = new Promise<void>((resolve) => (this.#signalClosed = resolve));

  constructor(options: AlarmEngineOptions) {
    this.#store = options.store;
    this.#records = options.records;
    this.#specs = options.specs;
    this.#noDataSeconds = options.noDataSeconds;
    this.#metrics = options.metrics;
    this.#log = options.logger;
    this.#clock = options.clock ?? (() => Date.now() / 1000);
    this.#checkpointMs = options.checkpointMs ?? CHECKPOINT_MS;
    this.#notifications = options.notifications;
    this.#adopted = options.adopted ?? false;
    this.#settled = options.settled;
    this.#rulesChanged = options.rulesChanged;
    this.#forwardAcknowledge = options.forwardAcknowledge;
    // From the start, so that no commit goes by unseen while the state loads.
    this.#subscribedAt = Date.now() / 1000;
    this.#unsubscribe = options.afterCommit.subscribe(this.#onCommit);
    this.#loaded = this.#load();
    this.#live = this.#loaded.then(() => this.#catchUp());
    // Failures are logged where they happen; these promises only tell waiters.
    this.#loaded.catch(() => undefined);
    this.#live.catch(() => undefined);
  }

  /** Resolves once evaluation is live: the state loaded and what was committed before caught up. */
  live(): Promise<void> {
    return this.#live;
  }

  /**
   * Resolves once evaluation is live, or once the first attempt to load the state failed (a MongoDB
   * server away at start: loading goes on in the background, as the records store's set-up does).
   */
  started(): Promise<void> {
    return Promise.race([this.#live, this.#firstFailure]);
  }

  /** Calls `listener` with every change once it is stored, in order (the live stream, webhooks). */
  onChange(listener: (changes: readonly AlarmChange[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #isClosed(): boolean {
    return this.#phase === 'closed';
  }

  // ---- rules -------------------------------------------------------------------------------

  async rules(): Promise<AlarmRule[]> {
    await this.#whenLoaded();
    return [...this.#rules.values()].sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async rule(id: string): Promise<AlarmRule | undefined> {
    await this.#whenLoaded();
    return this.#rules.get(id);
  }

  async createRule(settings: RuleSettings): Promise<AlarmRule> {
    await this.#whenLoaded();
    if (this.#rules.size >= MAX_RULES) throw new RuleLimitError(`There are ${MAX_RULES} rules already: delete one first`);
    const rule = newRule(randomUUID(), settings, this.#clock());
    this.#putRule(rule);
    await this.#stored();
    return rule;
  }

  /** Replaces a rule's settings; undefined when there is none with that id. */
  async replaceRule(id: string, settings: RuleSettings): Promise<AlarmRule | undefined> {
    await this.#whenLoaded();
    const before = this.#rules.get(id);
    if (before === undefined) return undefined;
    const now = this.#clock();
    const after: AlarmRule = { ...before, ...settings, customized: before.builtin, updated_at: now };
    this.#edit(before, after, now);
    this.#putRule(after);
    await this.#stored();
    return after;
  }

  /** Deletes a rule, clearing its open alarms; false when there is none with that id. */
  async deleteRule(id: string): Promise<boolean> {
    await this.#whenLoaded();
    if (!this.#rules.has(id)) return false;
    this.#dropRule(id, this.#clock());
    this.#queue.rules.delete(id);
    this.#queue.rules.set(id, { delete: id });
    this.#ruleChanges++;
    this.#compile();
    await this.#stored();
    return true;
  }

  /**
   * Several instances: takes the rules as stored, another instance having changed them, with the
   * effect of each change on the packs this instance holds (as if changed here: an edit that clears,
   * a deletion). Rule changes made here and not stored yet are stored first.
   */
  async reloadRules(): Promise<void> {
    await this.#whenLoaded();
    for (let attempt = 0; ; attempt++) {
      if (this.#queue.rules.size > 0 || this.#writingRules) await this.#stored();
      const changes = this.#ruleChanges;
      const stored = await this.#store.loadRules();
      if (this.#isClosed()) return;
      if (changes === this.#ruleChanges && this.#queue.rules.size === 0 && !this.#writingRules) {
        this.#takeRules(stored);
        return;
      }
      // A change made here meanwhile: the rules read may not have it.
      if (attempt >= 3) throw new StoreUnavailableError('The rules keep changing here; reloaded next time');
    }
  }

  #takeRules(stored: readonly AlarmRule[]): void {
    const now = this.#clock();
    const ids = new Set<string>();
    let changed = false;
    for (const rule of stored) {
      ids.add(rule.id);
      const before = this.#rules.get(rule.id);
      if (before !== undefined && before.updated_at === rule.updated_at && before.name === rule.name && sameSettings(before, rule)) continue;
      if (before !== undefined) this.#edit(before, rule, now);
      this.#rules.set(rule.id, rule);
      changed = true;
    }
    for (const id of [...this.#rules.keys()]) {
      if (ids.has(id)) continue;
      this.#dropRule(id, now);
      changed = true;
    }
    if (!changed) return;
    this.#compile();
    this.#afterEvaluation();
    this.#log?.info({ rules: this.#rules.size }, 'alarms: rules reloaded (changed through another instance)');
  }

  /** A rule gone (deleted here or through another instance): its open alarms cleared, its state dropped from every pack. */
  #dropRule(id: string, now: number): void {
    for (const pack of this.#packs.values()) {
      const state = pack.rules[id];
      if (state === undefined) continue;
      if (state.open !== null) this.#clear(pack, state, now, null, 'rule_deleted', now);
      delete pack.rules[id];
      this.#dirty.add(pack.battery_id);
    }
    this.#rules.delete(id);
  }

  /** Whether this instance holds the pack's evaluation now (its state loaded and caught up): commands for it run here. */
  holds(batteryId: string): boolean {
    return this.#phase === 'live' && this.#packs.has(batteryId) && !this.#adopting.has(batteryId);
  }

  #putRule(rule: AlarmRule): void {
    this.#ruleChanges++;
    this.#rules.set(rule.id, rule);
    this.#queue.rules.delete(rule.id);
    this.#queue.rules.set(rule.id, { put: rule });
    this.#compile();
  }

  /** What an edit does to the rule's alarms and state (rules.ts: editEffect). */
  #edit(before: AlarmRule, after: AlarmRule, now: number): void {
    const effect = editEffect(before, after);
    for (const pack of this.#packs.values()) {
      const state = pack.rules[before.id];
      if (state === undefined) continue;
      if (effect.clear || (effect.rescope && !watches(after, pack.battery_id))) {
        if (state.open !== null) this.#clear(pack, state, now, null, after.enabled ? 'rule_changed' : 'rule_disabled', now);
        state.pending_since = null;
        state.window = null;
      } else if (effect.restartWindow) {
        state.window = null;
      }
      this.#dirty.add(pack.battery_id);
    }
  }

  /** The enabled rules, arranged for evaluation. */
  #compile(): void {
    const judged = new Map<KindName, Judged[]>(KIND_NAMES.map((kind) => [kind, []]));
    const silences: AlarmRule[] = [];
    for (const rule of this.#rules.values()) {
      if (!rule.enabled) continue;
      if (rule.type === 'no_data') {
        silences.push(rule);
        continue;
      }
      let column: number;
      try {
        column = columnIndex(rule.kind, rule.field!);
      } catch {
        // A field the kind does not carry (a cell_imbalance rule on another kind): the rule judges nothing.
        continue;
      }
      const levels = [rule.warning, rule.critical].filter((band) => band !== null);
      const lower = Math.max(-Infinity, ...levels.map((band) => band.below ?? -Infinity));
      const upper = Math.min(Infinity, ...levels.map((band) => band.above ?? Infinity));
      judged.get(rule.kind)!.push({ rule, column, lower, upper, windowed: rule.type === 'rate_of_rise' });
    }
    this.#judged = judged;
    this.#silences = silences;
    if (this.#phase === 'live') this.#startSweep();
  }

  // ---- alarms ------------------------------------------------------------------------------

  async alarms(query: AlarmQuery): Promise<Alarm[]> {
    await this.#whenLoaded();
    await this.#caughtUpWrites();
    return this.#store.alarms(query);
  }

  async alarm(id: string): Promise<AlarmWithEvents | null> {
    await this.#whenLoaded();
    await this.#caughtUpWrites();
    return this.#store.alarm(id);
  }

  /**
   * Acknowledges an open alarm. Several instances: one whose pack another instance holds is
   * acknowledged there (forwardAcknowledge), unless `here` (the owner running that command).
   */
  async acknowledge(id: string, by: string, note: string | null, here = false): Promise<AcknowledgeResult> {
    await this.#whenLoaded();
    const open = this.#open.get(id);
    if (open === undefined) {
      await this.#caughtUpWrites();
      const stored = await this.#store.alarm(id);
      if (stored === null) return { status: 'not_found' };
      // Open as stored: held by the instance that owns its pack.
      if (stored.state !== 'cleared' && !here && this.#forwardAcknowledge !== undefined) {
        const { events, ...alarm } = stored;
        return this.#forwardAcknowledge(alarm, by, note);
      }
      return { status: 'cleared', alarm: stored };
    }
    const alarm = open.pack.rules[open.ruleId]!.open!;
    if (alarm.state === 'acknowledged') return { status: 'already_acknowledged', alarm: { ...alarm } };
    const now = this.#clock();
    alarm.state = 'acknowledged';
    alarm.acknowledged_by = by;
    alarm.acknowledged_note = note;
    alarm.acknowledged_at = now;
    alarm.updated_at = now;
    this.#record(alarm, 'acknowledged', now, alarm.value, null, { by, note });
    await this.#stored();
    const stored = await this.#store.alarm(id);
    return stored === null ? { status: 'not_found' } : { status: 'acknowledged', alarm: stored };
  }

  /** Removes alarms cleared before `cutoff` (Unix seconds) and their events; never an open one. */
  async deleteClosedBefore(cutoff: number): Promise<number> {
    await this.#whenLoaded();
    return this.#store.deleteClosedBefore(cutoff);
  }

  // ---- evaluation --------------------------------------------------------------------------

  readonly #onCommit = (commit: readonly CommittedRows[]): void => {
    if (this.#adopting.size > 0) {
      const held = commit.filter((rows) => this.#adopting.get(rows.batteryId)?.push(rows) === undefined);
      if (held.length < commit.length) commit = held;
    }
    if (this.#phase === 'live') {
      for (const rows of commit) this.#evaluate(rows.kind, rows.batteryId, rows.rows, true);
      this.#afterEvaluation();
      return;
    }
    if (this.#isClosed()) return;
    // Loading: evaluated once the state is there, in the same order.
    const count = commit.reduce((n, rows) => n + rows.rows.length, 0);
    if (!this.#overflowed && this.#bufferedRows + count <= MAX_BUFFERED_ROWS) {
      this.#buffer.push(commit);
      this.#bufferedRows += count;
      return;
    }
    if (!this.#overflowed) {
      this.#overflowed = true;
      for (const held of this.#buffer) for (const rows of held) this.#miss(rows);
      this.#buffer = [];
      this.#bufferedRows = 0;
    }
    for (const rows of commit) this.#miss(rows);
  };

  #miss(rows: CommittedRows): void {
    const key = `${rows.kind}\u0000${rows.batteryId}`;
    const oldest = rows.rows.timestamp(0);
    const missed = this.#missed.get(key);
    if (missed === undefined) this.#missed.set(key, { kind: rows.kind, batteryId: rows.batteryId, oldest });
    else missed.oldest = Math.min(missed.oldest, oldest);
  }

  #packOf(batteryId: string): PackState {
    let pack = this.#packs.get(batteryId);
    if (pack === undefined) {
      pack = { battery_id: batteryId, kinds: {}, rules: {} };
      this.#packs.set(batteryId, pack);
    }
    return pack;
  }

  /**
   * Judges a pack's readings of one kind, in timestamp order. `arrived`: they arrived just now (a
   * commit), as opposed to being read back after a restart: only then do they end a silence's clock.
   */
  #evaluate(kind: KindName, batteryId: string, batch: RecordBatch, arrived: boolean): void {
    const n = batch.length;
    if (n === 0) return;
    // Straight from the batch's columns: this loop runs for every row and rule at full ingest rate.
    const { numbers, width } = batch;
    const pack = this.#packOf(batteryId);
    const progress = pack.kinds[kind];
    // A backfill: older than what this pack's evaluation has reached. Stored, shown, not judged.
    let first = 0;
    if (progress !== undefined) while (first < n && numbers[first * width]! < progress.newest) first++;
    if (first === n) return;
    const now = this.#clock();
    const firstAt = numbers[first * width]!;

    // A reading ends a silence.
    for (const rule of this.#silences) {
      if (rule.kind !== kind || !watches(rule, batteryId)) continue;
      const state = pack.rules[rule.id];
      if (state === undefined || state.open === null) continue;
      const gap = progress === undefined ? 0 : Math.max(0, firstAt - progress.newest);
      // A late reading (a spool delivered after an outage) can predate the raise: the alarm ends no earlier than it began.
      this.#clear(pack, state, Math.max(firstAt, state.open.raised_at), roundMs(gap), 'condition', now);
    }

    for (const { rule, column, lower, upper, windowed } of this.#judged.get(kind)!) {
      if (!watches(rule, batteryId)) continue;
      let state = pack.rules[rule.id];
      for (let i = first; i < n; i++) {
        const value = numbers[i * width + column]!;
        // NaN: an optional column the row lacks.
        if (Number.isNaN(value)) continue;
        // The usual reading: past no level, nothing open, nothing pending.
        if (!windowed && value >= lower && value <= upper && (state === undefined || (state.open === null && state.pending_since === null))) continue;
        const at = numbers[i * width]!;
        state ??= pack.rules[rule.id] = newState();
        const transition = assess(rule, state, state.open === null ? null : state.open.severity, at, value);
        if (transition !== null) this.#transition(pack, rule, state, transition, at, now);
      }
    }
    pack.kinds[kind] = { newest: numbers[(n - 1) * width]!, received: arrived || progress === undefined ? now : progress.received };
    this.#dirty.add(batteryId);
  }

  #transition(pack: PackState, rule: AlarmRule, state: RuleState, transition: Transition, at: number, now: number): void {
    const { value } = transition;
    if (transition.type === 'cleared') {
      this.#clear(pack, state, at, value, 'condition', now);
      return;
    }
    if (transition.type === 'raised') {
      state.seq++;
      const alarm: Alarm = {
        id: `${rule.id}~${pack.battery_id}~${state.seq}`,
        rule_id: rule.id,
        rule_name: rule.name,
        type: rule.type,
        kind: rule.kind,
        field: rule.field,
        battery_id: pack.battery_id,
        state: 'active',
        severity: transition.severity,
        peak_severity: transition.severity,
        raised_at: at,
        raised_value: value,
        raised_server_at: now,
        value,
        updated_at: now,
        acknowledged_by: null,
        acknowledged_note: null,
        acknowledged_at: null,
        cleared_at: null,
        cleared_value: null,
        cleared_server_at: null,
        clear_reason: null,
        event_count: 0,
      };
      state.open = alarm;
      this.#open.set(alarm.id, { pack, ruleId: rule.id });
      this.#count(transition.severity, 1);
      this.#record(alarm, 'raised', at, value, null);
      return;
    }
    const alarm = state.open!;
    this.#count(transition.previous, -1);
    this.#count(transition.severity, 1);
    alarm.severity = transition.severity;
    if (rankOf(transition.severity) > rankOf(alarm.peak_severity)) alarm.peak_severity = transition.severity;
    // Worse than what was acknowledged: it needs someone's attention again.
    if (transition.type === 'escalated' && alarm.state === 'acknowledged') alarm.state = 'active';
    alarm.value = value;
    alarm.updated_at = now;
    this.#record(alarm, transition.type, at, value, transition.previous);
  }

  #clear(pack: PackState, state: RuleState, at: number, value: number | null, reason: ClearReason, now: number): void {
    const alarm = state.open!;
    alarm.state = 'cleared';
    alarm.cleared_at = at;
    alarm.cleared_value = value;
    alarm.cleared_server_at = now;
    alarm.clear_reason = reason;
    alarm.updated_at = now;
    if (value !== null) alarm.value = value;
    this.#count(alarm.severity, -1);
    this.#open.delete(alarm.id);
    state.open = null;
    state.pending_since = null;
    this.#dirty.add(pack.battery_id);
    this.#record(alarm, 'cleared', at, value, null, { reason });
  }

  #record(
    alarm: Alarm,
    type: AlarmEventType,
    at: number,
    value: number | null,
    previous: Severity | null,
    extra: { by?: string; note?: string | null; reason?: ClearReason } = {},
  ): void {
    alarm.event_count++;
    const event: AlarmEvent = {
      id: `${alarm.id}~${alarm.event_count}`,
      alarm_id: alarm.id,
      seq: alarm.event_count,
      type,
      rule_id: alarm.rule_id,
      battery_id: alarm.battery_id,
      severity: alarm.severity,
      previous_severity: previous,
      value,
      at,
      server_at: alarm.updated_at,
      by: extra.by ?? null,
      note: extra.note ?? null,
      reason: extra.reason ?? null,
    };
    this.#queue.changes.push({ event, alarm: { ...alarm } });
    this.#dirty.add(alarm.battery_id);
    this.#metrics.alarmEvents.inc({ type });
    this.#log?.info(
      { alarm_id: alarm.id, rule_id: alarm.rule_id, battery_id: alarm.battery_id, severity: alarm.severity, value, event: type },
      `alarm ${type}`,
    );
  }

  #count(severity: Severity, delta: number): void {
    this.#openCounts[severity] += delta;
    this.#metrics.alarmsOpen.set({ severity }, this.#openCounts[severity]);
  }

  #afterEvaluation(): void {
    if (this.#queue.changes.length > 0) this.#scheduleFlush();
  }

  /** No-data rules: a pack silent past a level raises, past a higher one escalates. */
  readonly #sweep = (): void => {
    if (this.#phase !== 'live') return;
    const now = this.#clock();
    for (const rule of this.#silences) {
      for (const pack of this.#packs.values()) {
        const progress = pack.kinds[rule.kind];
        if (progress === undefined || !watches(rule, pack.battery_id)) continue;
        const silence = roundMs(now - Math.max(progress.received, this.#startedAt));
        const severity = severityOf(rule, silence);
        if (severity === null) continue;
        const state = (pack.rules[rule.id] ??= newState());
        if (state.open === null) this.#transition(pack, rule, state, { type: 'raised', severity, value: silence }, now, now);
        else if (rankOf(severity) > rankOf(state.open.severity)) {
          this.#transition(pack, rule, state, { type: 'escalated', severity, previous: state.open.severity, value: silence }, now, now);
        }
      }
    }
    this.#afterEvaluation();
  };

  /** Sweeps often enough for the shortest no-data level: a quarter of it, from 0.2 s to 5 s. */
  #startSweep(): void {
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    const levels = this.#silences.flatMap((rule) => [rule.warning?.above, rule.critical?.above]).filter((level) => level !== undefined);
    if (levels.length === 0) return;
    const intervalMs = Math.min(5000, Math.max(200, (Math.min(...levels) * 1000) / 4));
    this.#sweepTimer = setInterval(this.#sweep, intervalMs);
    this.#sweepTimer.unref();
  }

  // ---- start -------------------------------------------------------------------------------

  async #whenLoaded(): Promise<void> {
    if (this.#isClosed()) throw new StoreUnavailableError('The alarm engine is closed');
    await withDeadline(this.#loaded, WRITE_WAIT_MS, () => new StoreUnavailableError('The alarm store is not reachable yet; try again shortly'));
  }

  /** Loads the state, retrying while the store is away (a MongoDB server may come later than the service). */
  async #load(): Promise<void> {
    const loaded = await untilAnswered(() => this.#store.load(), {
      warning: 'alarms: cannot load the alarm state yet; retrying (commits meanwhile are evaluated once it is loaded)',
      log: this.#log,
      closed: () => this.#isClosed(),
      closing: this.#closedSignal,
      failed: () => this.#firstFailed(),
    });
    if (loaded === undefined) throw new StoreUnavailableError('The alarm engine is closed');
    this.#install(loaded);
  }

  #install(loaded: LoadedState): void {
    const now = this.#clock();
    for (const rule of loaded.rules) this.#rules.set(rule.id, rule);
    if (!this.#adopted) for (const pack of loaded.packs) this.#installPack(pack);
    for (const severity of ['warning', 'critical'] as const) this.#metrics.alarmsOpen.set({ severity }, this.#openCounts[severity]);
    this.#writtenAt = loaded.writtenAt;
    this.#notifications?.loaded(loaded.webhooks, loaded.outbox);

    // Default rules: created once each; those never edited follow the specs file and NO_DATA_SECONDS.
    this.#seeded = [...loaded.seeded];
    for (const { id, ...settings } of defaultRules(this.#specs, this.#noDataSeconds)) {
      const existing = this.#rules.get(id);
      if (!this.#seeded.includes(id)) {
        this.#seeded.push(id);
        this.#seededChanged = true;
        if (existing === undefined) this.#putRule(newRule(id, settings, now, true));
      } else if (existing?.builtin === true && !existing.customized && (!sameSettings(existing, settings) || existing.name !== settings.name)) {
        const updated: AlarmRule = { ...existing, ...settings, updated_at: now };
        this.#edit(existing, updated, now);
        this.#putRule(updated);
        this.#log?.info({ rule_id: id }, 'alarms: default rule follows the changed specs file or NO_DATA_SECONDS');
      }
    }
    // A rule deleted by a write cut short before its alarms were cleared (MongoDB): clear them now.
    for (const pack of this.#packs.values()) {
      for (const [ruleId, state] of Object.entries(pack.rules)) {
        if (this.#rules.has(ruleId)) continue;
        if (state.open !== null) this.#clear(pack, state, now, null, 'rule_deleted', now);
        delete pack.rules[ruleId];
        this.#dirty.add(pack.battery_id);
      }
    }
    this.#compile();
    if (this.#seededChanged || this.#queue.rules.size > 0 || this.#queue.changes.length > 0) this.#scheduleFlush();
    this.#log?.info(
      { store: this.#store.name, rules: this.#rules.size, packs: this.#packs.size, open: this.#open.size },
      'alarms: state loaded',
    );
  }

  /** A pack's state as stored, with its open alarms. */
  #installPack(pack: PackState): void {
    this.#packs.set(pack.battery_id, pack);
    for (const [ruleId, state] of Object.entries(pack.rules)) {
      if (state.open === null) continue;
      this.#open.set(state.open.id, { pack, ruleId });
      this.#openCounts[state.open.severity]++;
    }
  }

  /**
   * Takes a pack this instance owns from now on (cluster/pack-ownership.ts): its stored state (the
   * previous owner's last write, alarms and state together), then its records stored after that state,
   * then its commits, those read back left out. Nothing is raised twice: the state matches the stored
   * alarms; nothing is missed: what the state has not seen is in the records.
   */
  async adopt(batteryId: string, fedUpTo: (kind: KindName) => WritePosition | undefined = () => undefined): Promise<void> {
    if (this.#isClosed() || this.#packs.has(batteryId) || this.#adopting.has(batteryId)) return;
    const held: CommittedRows[] = [];
    this.#adopting.set(batteryId, held);
    // Split by write position, taken together with the hold: what the feed handed on before is read
    // back, what it hands on from now on is held. A read of the store alone could see a later write
    // before an earlier one still in flight, and take the earlier one as late when it comes.
    const before = new Map(KIND_NAMES.map((kind) => [kind, fedUpTo(kind)]));
    await this.#live;
    const stored = await this.#untilAnswered(() => this.#store.loadPack(batteryId), `alarms: cannot load the state of ${batteryId} yet; retrying`);
    if (this.#isClosed() || this.#adopting.get(batteryId) !== held) return;
    const now = this.#clock();
    if (stored !== undefined) {
      this.#installPack(stored);
      for (const severity of ['warning', 'critical'] as const) this.#metrics.alarmsOpen.set({ severity }, this.#openCounts[severity]);
      // Rules deleted while another instance held the pack.
      for (const [ruleId, state] of Object.entries(stored.rules)) {
        if (this.#rules.has(ruleId)) continue;
        if (state.open !== null) this.#clear(stored, state, now, null, 'rule_deleted', now);
        delete stored.rules[ruleId];
        this.#dirty.add(batteryId);
      }
    }
    // A pack with no stored state has never been judged by any instance: all its records (below the
    // feed's position), whatever their time. A device's backlog stamped hours ago may be the first
    // the cluster sees of a pack; a look-back by record time, as a restart uses, would pass it over.
    const seen = new Set<string>();
    await this.#readBack(
      KIND_NAMES.map((kind) => {
        const newest = stored?.kinds[kind]?.newest;
        const writtenBefore = before.get(kind);
        return newest === undefined ? { kind, batteryId, from: MIN_TIMESTAMP, after: -Infinity, writtenBefore } : { kind, batteryId, from: newest, after: newest, writtenBefore };
      }),
      seen,
    );
    if (this.#isClosed() || this.#adopting.get(batteryId) !== held) return;
    // In one go, with no await: the pack's next commits are evaluated as they come.
    this.#adopting.delete(batteryId);
    for (const commit of held) {
      const rows = withoutIds(commit, seen);
      if (rows.length > 0) this.#evaluate(commit.kind, batteryId, rows, true);
    }
    this.#afterEvaluation();
  }

  /** Another instance owns the pack now: its state and open alarms are dropped here, unwritten. */
  release(batteryId: string): void {
    this.#adopting.delete(batteryId);
    const pack = this.#packs.get(batteryId);
    if (pack === undefined) return;
    for (const state of Object.values(pack.rules)) {
      if (state.open === null) continue;
      this.#open.delete(state.open.id);
      this.#count(state.open.severity, -1);
    }
    this.#packs.delete(batteryId);
    this.#dirty.delete(batteryId);
  }

  /**
   * Evaluates what was committed while the engine was not running (after its last write) or loading,
   * then what came meanwhile, in order, and goes live.
   */
  async #catchUp(): Promise<void> {
    const targets = new Map<string, CatchUp>();
    for (const pack of this.#packs.values()) {
      for (const kind of KIND_NAMES) {
        const progress = pack.kinds[kind];
        if (progress === undefined) continue;
        targets.set(`${kind}\u0000${pack.battery_id}`, { kind, batteryId: pack.battery_id, from: progress.newest, after: progress.newest });
      }
    }
    if (this.#adopted) {
      // Packs come through adopt().
      targets.clear();
    } else if (this.#writtenAt !== undefined) {
      // Packs first seen after the last write have no state here: the store's summary names them.
      // Packs with state are read back whatever it says: on MongoDB its figures are eventually right
      // only (mongodb-summary.ts), and a pack it showed as up to date would miss what came after.
      const horizon = this.#writtenAt - REPLAY_LOOKBACK_SECONDS;
      for (const battery of await this.#packsInStore()) {
        for (const kind of KIND_NAMES) {
          const lastSeen = battery.last_seen_by_kind[kind];
          const key = `${kind}\u0000${battery.battery_id}`;
          if (lastSeen !== undefined && lastSeen >= horizon && !targets.has(key)) {
            targets.set(key, { kind, batteryId: battery.battery_id, from: horizon, after: -Infinity });
          }
        }
      }
    } else {
      // A store never written to: evaluation starts with the next commits.
      targets.clear();
    }
    await this.#readBack([...targets.values()]);

    for (let round = 0; this.#overflowed && round < MAX_CATCH_UP_ROUNDS && this.#phase !== 'closed'; round++) {
      const missed = [...this.#missed.values()];
      this.#missed.clear();
      this.#overflowed = false;
      await this.#readBack(
        missed.map(({ kind, batteryId, oldest }) => {
          const progress = this.#packs.get(batteryId)?.kinds[kind];
          return progress === undefined
            ? { kind, batteryId, from: oldest, after: -Infinity }
            : { kind, batteryId, from: progress.newest, after: progress.newest };
        }),
      );
    }
    if (this.#isClosed()) return;
    if (this.#overflowed) {
      this.#log?.warn(
        { packs: this.#missed.size },
        'alarms: commits kept overflowing while catching up; some records stored during start-up are not evaluated',
      );
      this.#missed.clear();
      this.#overflowed = false;
    }
    // In one go, with no await: no commit can come between the buffer and live evaluation.
    const buffered = this.#buffer;
    this.#buffer = [];
    this.#bufferedRows = 0;
    for (const commit of buffered) for (const rows of commit) this.#evaluate(rows.kind, rows.batteryId, rows.rows, true);
    this.#phase = 'live';
    this.#startedAt = this.#clock();
    this.#afterEvaluation();
    this.#startSweep();
    this.#checkpointTimer = setInterval(() => {
      if (this.#dirty.size > 0) this.#scheduleFlush();
    }, this.#checkpointMs);
    this.#checkpointTimer.unref();
  }

  /** The store's packs, asked until it answers (warned once); none once closed. */
  async #packsInStore(): Promise<BatterySummary[]> {
    return (await this.#untilAnswered(() => this.#records.batteries(), 'alarms: cannot list the packs to catch up yet; retrying')) ?? [];
  }

  #untilAnswered<T>(attempt: () => Promise<T>, warning: string): Promise<T | undefined> {
    return untilAnswered(attempt, { warning, log: this.#log, closed: () => this.#isClosed(), closing: this.#closedSignal });
  }

  /**
   * Evaluates each pack's records stored after `after` and received before the engine subscribed
   * (those received since come as commits, in commit order: a read of the store can see a later
   * write before an earlier one still in flight). A read that fails is retried from the newest
   * record evaluated, never skipped: a raise or a clear in the records would be lost for good.
   */
  async #readBack(targets: readonly CatchUp[], seen?: Set<string>): Promise<void> {
    let rows = 0;
    for (const target of targets) {
      const { kind, batteryId } = target;
      await this.#untilAnswered(async () => {
        // An attempt before this one may have evaluated some: go on from the newest.
        const newest = this.#packs.get(batteryId)?.kinds[kind]?.newest;
        const after = newest === undefined ? target.after : Math.max(target.after, newest);
        const from = newest === undefined ? target.from : Math.max(target.from, newest);
        rows += await this.#readBackPack(kind, batteryId, from, after, seen, target.writtenBefore);
      }, `alarms: cannot read back the ${kind} records of ${batteryId} stored before the start yet; retrying`);
      if (this.#isClosed()) return;
    }
    if (rows > 0) this.#log?.info({ records: rows }, 'alarms: evaluated records stored before the start');
  }

  /**
   * One attempt of #readBack for one pack: answers how many records it evaluated. With `seen` (a pack
   * adopted), every record is taken and its id noted: the commits held meanwhile leave those out.
   */
  async #readBackPack(kind: KindName, batteryId: string, from: number, after: number, seen?: Set<string>, writtenBefore?: WritePosition): Promise<number> {
    let rows = 0;
    let chunk: StoredRecord[] = [];
    const range = { from, to: MAX_TIMESTAMP + 1, batteryId, ...(writtenBefore === undefined ? {} : { writtenBefore }) };
    for await (const record of this.#records.exportRange(kind, range)) {
      if (this.#isClosed()) return rows;
      if (record.timestamp <= after) continue;
      if (seen === undefined ? record.received_at >= this.#subscribedAt : seen.has(record._id)) continue;
      seen?.add(record._id);
      chunk.push(record);
      if (chunk.length >= REPLAY_CHUNK) {
        this.#evaluate(kind, batteryId, batchOf(kind, chunk), false);
        rows += chunk.length;
        chunk = [];
        this.#afterEvaluation();
      }
    }
    this.#evaluate(kind, batteryId, batchOf(kind, chunk), false);
    this.#afterEvaluation();
    return rows + chunk.length;
  }

  // ---- writing -----------------------------------------------------------------------------

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#retryTimer !== undefined) return;
    this.#flushScheduled = true;
    // One turn of the event loop: the changes of commits handed on together go in one write.
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #urgent(): boolean {
    return this.#queue.changes.length > 0 || this.#queue.rules.size > 0 || this.#queue.waiters.length > 0 || this.#seededChanged;
  }

  /** Writes what is queued and the changed packs' state as one change set; one at a time. */
  #flush(): void {
    if (this.#writing !== undefined) return;
    if (!this.#urgent() && this.#dirty.size === 0) return;
    const taken = this.#queue;
    this.#queue = emptyQueue();
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    const alarms = new Map<string, Alarm>();
    for (const { alarm } of taken.changes) alarms.set(alarm.id, alarm);
    const writtenAt = this.#clock();
    // Built afresh at each attempt (a failed write is retried with what came since): the ids are the same.
    const outbox = this.#notifications?.outboxFor(taken.changes, (id) => this.#rules.get(id), writtenAt) ?? [];
    this.#writingRules = taken.rules.size > 0;
    const changes: ChangeSet = {
      rules: [...taken.rules.values()],
      packs: dirty.map((id) => snapshotOf(this.#packs.get(id)!)),
      alarms: [...alarms.values()],
      events: taken.changes.map(({ event }) => event),
      outbox,
      writtenAt,
    };
    const seeded = this.#seededChanged;
    if (seeded) changes.seeded = [...this.#seeded];
    this.#seededChanged = false;
    this.#writing = this.#store.apply(changes).then(
      () => {
        this.#writing = undefined;
        this.#writingRules = false;
        this.#backoff.reset();
        if (this.#failing) this.#log?.info({}, 'alarms: the alarm store takes changes again');
        this.#failing = false;
        for (const waiter of taken.waiters) waiter.resolve();
        // The other instances reload the rules (a change whose request answered 503, the store away, too: it is stored now).
        if (taken.rules.size > 0) void this.#rulesChanged?.();
        if (outbox.length > 0) this.#notifications?.stored(outbox);
        if (taken.changes.length > 0) this.#tell(taken.changes);
        if (this.#urgent()) this.#scheduleFlush();
      },
      (error: unknown) => {
        this.#writing = undefined;
        this.#writingRules = false;
        // Back in front of what came since, in order; the packs' state is taken afresh next time.
        this.#queue = {
          rules: new Map([...taken.rules, ...this.#queue.rules]),
          changes: [...taken.changes, ...this.#queue.changes],
          waiters: [...taken.waiters, ...this.#queue.waiters],
        };
        for (const id of dirty) this.#dirty.add(id);
        if (seeded) this.#seededChanged = true;
        if (!this.#failing) this.#log?.error({ err: (error as Error).message }, 'alarms: the alarm store did not take the changes; retrying');
        this.#failing = true;
        if (this.#isClosed()) return;
        this.#retryTimer = setTimeout(() => {
          this.#retryTimer = undefined;
          this.#flush();
        }, this.#backoff.next());
        this.#retryTimer.unref();
      },
    );
  }

  #tell(changes: AlarmChange[]): void {
    for (const listener of this.#listeners) {
      try {
        listener(changes);
      } catch (error) {
        this.#log?.error({ err: error }, 'alarms: a change listener failed');
      }
    }
  }

  /** Resolves once everything queued so far is stored; an API change waits on it, bounded. */
  #stored(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new StoreUnavailableError('The alarm store did not take the change in time; it is kept and stored once the store answers')),
        WRITE_WAIT_MS,
      );
      this.#queue.waiters.push({
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#scheduleFlush();
    });
  }

  /** Lets queued alarm changes reach the store before a read (bounded: a read answers even while the store is slow). */
  async #caughtUpWrites(): Promise<void> {
    // Several instances: what this instance stored reaches evaluation through the store, a poll later.
    if (this.#settled !== undefined) await Promise.race([this.#settled().catch(() => undefined), sleep(READ_WAIT_MS)]);
    if (this.#queue.changes.length === 0 && this.#queue.rules.size === 0 && this.#writing === undefined) return;
    await Promise.race([this.#stored().catch(() => undefined), sleep(READ_WAIT_MS)]);
  }

  // ---- close -------------------------------------------------------------------------------

  /** Stops evaluating, writes what was evaluated (one last attempt), closes the store. */
  async close(): Promise<void> {
    if (this.#isClosed()) return;
    this.#phase = 'closed';
    this.#signalClosed();
    this.#unsubscribe();
    clearInterval(this.#sweepTimer);
    clearInterval(this.#checkpointTimer);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    await this.#live.catch(() => undefined);
    await this.#writing;
    if (this.#urgent() || this.#dirty.size > 0) {
      this.#flush();
      await this.#writing;
      if (this.#queue.changes.length > 0 || this.#queue.rules.size > 0) {
        this.#log?.error({ events: this.#queue.changes.length }, 'alarms: closing with changes the alarm store did not take');
      }
    }
    const closed = new StoreUnavailableError('The alarm engine closed');
    for (const waiter of this.#queue.waiters.splice(0)) waiter.reject(closed);
    await this.#store.close();
  }
}
