/**
 * The ingest sink of the all-in-one process: every producer (HTTP POSTs, the TCP collector) submits
 * its record batches here, and this is the one place that batches, retries and pushes back.
 *
 * - Group commit: while a write is in flight, new batches queue, and the next write takes all of
 *   them at once. Under load many requests share one durable transaction, so the cost of a sync to
 *   disk is paid once per write instead of once per request.
 * - Back-pressure: past `maxPendingRecords` records taken and not yet durable, or while the store
 *   is away, the sink is `full`. HTTP submissions are then refused at once (IngestFullError: 503
 *   with Retry-After) instead of growing memory; the collector pauses its sockets and resumes on
 *   'drained' (at half the bound).
 * - Retry: a write that fails with StoreUnavailableError fails the HTTP batches in it (their clients
 *   answer 503 and retry) and holds the batches of producers that asked to be retried
 *   (SubmitOptions.retryUntil), which go again, in order, after a backoff from 100 ms to 5 s; any
 *   write that succeeds meanwhile ends the wait.
 * - Refusals: a write that fails for any other reason is the store refusing records for themselves
 *   (a constraint, a value it cannot hold), which retrying will not change. Only the records
 *   concerned are refused, never their neighbours: a batch that failed in a write shared with
 *   others, without the store saying which rows it refused, goes again in a write of its own; an
 *   HTTP request's batch (atomic, as its client was promised) then fails whole, naming the records
 *   (RecordsRefusedError, which the API answers 422); a device's batch (SubmitOptions.atomic false)
 *   loses only the refused records: the rows the store named are taken out and the rest written
 *   again, and when it could not name them the batch is split in halves, down to the single record.
 *   Each refused record is counted (ingest_records_refused_total, by kind and reason) and logged at
 *   most once a minute per reason. None of this costs anything until a write fails.
 * - After commit: stored batches are handed to the after-commit stage (after-commit.ts) in the order
 *   they were submitted, and only then are their producers answered (those that asked, through
 *   SubmitOptions.existing, first hear which rows the store held already by their keys): whoever
 *   hears "stored" can count on subscribers (the live feed, alarms, analytics) having seen it. A
 *   batch stored while an earlier one waits to be written again (held through an outage while a
 *   later write went through, or a part of a refused batch) waits for it: subscribers that integrate
 *   a pack's timeline never see a device's readings out of the order it sent them.
 */
import { EventEmitter } from 'node:events';
import { LogEvery } from '../collector/log-every.js';
import type { CollectorMetrics } from '../collector/metrics.js';
import type { KindName } from '../records/kinds.js';
import { RecordRefusedError, StoreUnavailableError, type RefusalReason, type Store, type WriteOutcome } from '../store/store.js';
import { AfterCommit, type AfterCommitLogger, type StoredBatch } from './after-commit.js';
import { Backoff } from './backoff.js';
import { RecordBatch } from './record-batch.js';
import { PendingBound, RecordsRefusedError, type RecordSink, type SubmitOptions } from './record-sink.js';

/** How often a refusal of the same reason is logged again (with how many there were meanwhile). */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

/** A full sink's refusal of an HTTP batch: the API answers 503 with Retry-After. */
export class IngestFullError extends Error {
  override name = 'IngestFullError';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

export interface StoreSinkOptions {
  /**
   * Records taken and not yet durable past which the sink is full. A battery-data row of a batch
   * takes 56 bytes, so the default holds about 6 MB of rows.
   */
  maxPendingRecords?: number;
  /**
   * Upper bound on records in one store write; more queued are written in several. 10,000 gives the
   * same ingest rate as 50,000 here (SQLite: a commit's sync is then paid once per 10,000 rows), and
   * a peak RSS about 30 MB lower (bench/collector-ingest.ts, see docs/decisions/0009).
   */
  maxRecordsPerWrite?: number;
  /**
   * Writes handed to the store before the first is done. With two, the next batch is already on its
   * way while a write is in progress: for a store across a network (MongoDB, Atlas) that hides one
   * round trip per batch. The SQLite writer thread commits them one after the other, in order; on
   * this machine SQLite measured the same with one or two (about 17,000 single POSTs/s either way).
   */
  maxWritesInFlight?: number;
  /** Where store outages, refused records and failing after-commit subscribers are logged. */
  logger?: AfterCommitLogger & { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
  /** Where refused records are counted. */
  metrics?: Pick<CollectorMetrics, 'recordsRefused'>;
  /** Delays between attempts while the store is away. */
  retryMinMs?: number;
  retryMaxMs?: number;
}

interface Pending {
  readonly seq: number;
  /** Row of the submitted batch this one starts with (a part of a split batch); orders parts of one submission. */
  readonly first: number;
  readonly batch: RecordBatch;
  readonly retryUntil: AbortSignal | undefined;
  readonly atomic: boolean;
  /** SubmitOptions.existing; a part's maps its rows back to the submitted batch's. */
  readonly existing: ((rows: readonly number[]) => void) | undefined;
  /** Goes in a write of its own: it failed in a write shared with others, and the store did not say which records it refused. */
  alone: boolean;
  /** A part of a submission a refusal split: the submission, and its row of each of this batch's rows. */
  readonly split?: { readonly whole: Split; readonly rows: readonly number[] };
  resolve(ids: string[]): void;
  reject(error: Error): void;
}

/**
 * A device's submission some of whose records the store refused: its other records are written again
 * in parts, and it settles once every part has. Rare, so nothing of this is on the normal path.
 */
class Split {
  readonly #ids: string[];
  readonly #refused: number[] = [];
  #refusal: RecordRefusedError | undefined;
  #failure: Error | undefined;
  /** Parts not yet settled. */
  #open = 1;

  constructor(
    length: number,
    readonly resolve: (ids: string[]) => void,
    readonly reject: (error: Error) => void,
  ) {
    this.#ids = new Array<string>(length);
  }

  /** One part was refused records and replaced by `parts` others. */
  refuse(rows: readonly number[], refusal: RecordRefusedError, parts: number): void {
    for (const row of rows) this.#refused.push(row);
    this.#refusal ??= refusal;
    this.#open += parts - 1;
    if (this.#open === 0) this.#finish();
  }

  stored(rows: readonly number[], ids: readonly string[]): void {
    rows.forEach((row, i) => (this.#ids[row] = ids[i]!));
    if (--this.#open === 0) this.#finish();
  }

  failed(error: Error): void {
    this.#failure ??= error;
    if (--this.#open === 0) this.#finish();
  }

  #finish(): void {
    if (this.#failure !== undefined) this.reject(this.#failure);
    else if (this.#refusal === undefined) this.resolve(this.#ids);
    else {
      const rows = this.#refused.sort((a, b) => a - b);
      this.reject(new RecordsRefusedError(this.#refusal.message, this.#refusal.reason, rows, this.#ids.length - rows.length));
    }
  }
}

/** A batch stored and not yet handed to the after-commit stage: an earlier one is still unsettled. */
interface Stored {
  readonly pending: Pending;
  readonly stored: StoredBatch;
}

interface Write {
  readonly pending: Pending[];
  /** Set once the store answered: outcomes, or why the whole write failed. */
  result?: { outcomes: WriteOutcome[] } | { error: Error };
}

export class StoreSink extends EventEmitter implements RecordSink {
  /** Every stored batch, after its commit, in commit order: subscribe here (live feed, alarms, analytics). */
  readonly afterCommit: AfterCommit;
  readonly #store: Pick<Store, 'write'>;
  readonly #maxRecordsPerWrite: number;
  readonly #maxWritesInFlight: number;
  readonly #bound: PendingBound;
  readonly #backoff: Backoff;
  readonly #log: StoreSinkOptions['logger'];
  readonly #metrics: StoreSinkOptions['metrics'];
  /** Per reason, when a refusal was last logged. */
  readonly #refusalLogs = new Map<RefusalReason, LogEvery>();
  /** Submitted, not yet in a write, in submission order. */
  #queue: Pending[] = [];
  #pendingRecords = 0;
  /** Writes issued and not yet handed on, in the order issued. */
  readonly #writes: Write[] = [];
  /** Stored batches waiting for an earlier one (see #publishReady), in submission order. */
  #stored: Stored[] = [];
  #nextSeq = 0;
  #scheduled = false;
  /** Batches an outage failed and that wait to be stored: while there are any, the sink is full. */
  readonly #held = new Set<Pending>();
  /** Set while held batches wait for their next attempt. */
  #retryTimer: NodeJS.Timeout | undefined;
  #retryAt = 0;
  #closed = false;
  #idle: (() => void)[] = [];

  constructor(store: Pick<Store, 'write'>, options: StoreSinkOptions = {}) {
    super();
    this.#store = store;
    this.#maxRecordsPerWrite = options.maxRecordsPerWrite ?? 10_000;
    this.#maxWritesInFlight = options.maxWritesInFlight ?? 2;
    this.#bound = new PendingBound(options.maxPendingRecords ?? 100_000, () => this.emit('drained'));
    this.#backoff = new Backoff({ minMs: options.retryMinMs ?? 100, maxMs: options.retryMaxMs ?? 5000 });
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.afterCommit = new AfterCommit(options.logger);
  }

  /** Records submitted and not yet durable (or failed), in writes or waiting for one. */
  get pendingRecords(): number {
    return this.#pendingRecords;
  }

  get full(): boolean {
    return this.#bound.full;
  }

  /**
   * Resolves with the batch's ids once it is durable and the after-commit stage has seen it; all of
   * them or none. Rejects with RecordsRefusedError when the store refused records of it (a
   * non-atomic batch: the others are then stored), StoreUnavailableError through an outage (unless
   * held for `retryUntil`), IngestFullError when full.
   */
  submit(batch: RecordBatch, options: SubmitOptions = {}): Promise<string[]> {
    if (this.#closed) return Promise.reject(new Error('the ingest sink is closed'));
    if (batch.length === 0) return Promise.resolve([]);
    const { retryUntil, atomic = true, existing } = options;
    if (retryUntil === undefined && this.full) return Promise.reject(this.#fullError());
    return new Promise((resolve, reject) => {
      this.#queue.push({ seq: this.#nextSeq++, first: 0, batch, retryUntil, atomic, existing, alone: false, resolve, reject });
      this.#pendingRecords += batch.length;
      this.#bound.update(this.#pendingRecords, this.#held.size > 0);
      this.#schedule();
    });
  }

  /** Resolves once everything submitted so far is settled (tests, benchmarks). */
  drain(): Promise<void> {
    if (this.#pendingRecords === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Writes what is queued (held batches get one last attempt), waits for it, then refuses new submissions. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#retryNow();
    await this.drain();
  }

  #fullError(): IngestFullError {
    if (this.#held.size > 0) {
      const seconds = Math.max(1, Math.ceil((this.#retryAt - Date.now()) / 1000));
      return new IngestFullError(`The store is unavailable; retry after ${seconds} s`, seconds);
    }
    return new IngestFullError(`Too many records are waiting to be stored (over ${this.#bound.maxPendingRecords}); retry after 1 s`, 1);
  }

  #schedule(): void {
    if (this.#scheduled || this.#writes.length >= this.#maxWritesInFlight) return;
    // Wait one turn of the event loop so that submissions of the same tick share the write.
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    while (this.#writes.length < this.#maxWritesInFlight) {
      const pending = this.#take();
      if (pending.length === 0) return;
      const write: Write = { pending };
      this.#writes.push(write);
      this.#store.write(pending.map((p) => p.batch)).then(
        (outcomes) => this.#settle(write, { outcomes }),
        (error: unknown) => this.#settle(write, { error: error as Error }),
      );
    }
  }

  /** The batches of the next write: in order, up to maxRecordsPerWrite; held ones only when their wait is over. */
  #take(): Pending[] {
    const waiting = this.#retryTimer !== undefined;
    const taken: Pending[] = [];
    const left: Pending[] = [];
    let records = 0;
    let room = true;
    for (const pending of this.#queue) {
      const held = waiting && pending.retryUntil !== undefined;
      if (room && !held && taken.length > 0 && (pending.alone || records + pending.batch.length > this.#maxRecordsPerWrite)) room = false;
      if (held || !room) left.push(pending);
      else {
        taken.push(pending);
        records += pending.batch.length;
        if (pending.alone) room = false;
      }
    }
    this.#queue = left;
    return taken;
  }

  #settle(write: Write, result: Write['result']): void {
    write.result = result;
    // Hand on in the order issued: a later write that finished first waits for the earlier one.
    while (this.#writes.length > 0 && this.#writes[0]!.result !== undefined) this.#handOn(this.#writes.shift()!);
    this.#publishReady();
    this.#bound.update(this.#pendingRecords, this.#held.size > 0);
    if (this.#pendingRecords === 0) for (const resolve of this.#idle.splice(0)) resolve();
    this.#flush();
  }

  #handOn(write: Write): void {
    const result = write.result!;
    const shared = write.pending.length > 1;
    if ('error' in result) {
      if (result.error instanceof StoreUnavailableError) this.#failed(write.pending, result.error);
      else for (const pending of write.pending) this.#refused(pending, result.error, shared);
      return;
    }
    if (result.outcomes.some((outcome) => outcome.ok)) {
      // The store took a write: whatever is held need not wait for its timer.
      this.#backoff.reset();
      this.#retryNow();
    }
    const stored: Stored[] = [];
    // A store that writes kinds apart (MongoDB) answers an outage per batch.
    const away: Pending[] = [];
    let outage: Error | undefined;
    result.outcomes.forEach((outcome, i) => {
      const pending = write.pending[i]!;
      if (outcome.ok) {
        this.#release(pending);
        stored.push({ pending, stored: { batch: pending.batch, ids: outcome.ids, existing: outcome.existing } });
      } else if (outcome.error instanceof StoreUnavailableError) {
        away.push(pending);
        outage = outcome.error;
      } else this.#refused(pending, outcome.error, shared);
    });
    if (outage !== undefined) this.#failed(away, outage);
    if (stored.length > 0) this.#stored = this.#stored.length === 0 ? stored : mergeInOrder(this.#stored, stored, (entry) => entry.pending);
  }

  /**
   * Hands the stored batches to the after-commit stage, in submission order, up to the first batch
   * not yet settled (waiting in the queue to be written again, or in a write not yet handed on), and
   * answers their producers. Without failures nothing waits: a write is handed on after the writes
   * issued before it, and everything queued or in flight was submitted after it.
   */
  #publishReady(): void {
    if (this.#stored.length === 0) return;
    const first = this.#firstUnsettled();
    let ready = this.#stored.length;
    if (first !== undefined) {
      ready = 0;
      while (ready < this.#stored.length && before(this.#stored[ready]!.pending, first)) ready++;
      if (ready === 0) return;
    }
    const published = ready === this.#stored.length ? this.#stored : this.#stored.slice(0, ready);
    this.#stored = ready === this.#stored.length ? [] : this.#stored.slice(ready);
    this.afterCommit.publish(published.map((entry) => entry.stored));
    for (const { pending, stored } of published) {
      this.#pendingRecords -= pending.batch.length;
      if (stored.existing.length > 0) pending.existing?.(stored.existing);
      pending.resolve(stored.ids as string[]);
    }
  }

  /** The earliest batch submitted and neither stored nor failed: first in the queue or in a write in flight. */
  #firstUnsettled(): Pending | undefined {
    let first: Pending | undefined = this.#queue[0];
    for (const write of this.#writes) {
      const head = write.pending[0];
      if (head !== undefined && (first === undefined || before(head, first))) first = head;
    }
    return first;
  }

  /** `pending` is no longer held for an outage: the store answered for it. */
  #release(pending: Pending): void {
    if (this.#held.delete(pending) && this.#held.size === 0) this.#log?.info({}, 'the store takes records again; reading resumes');
  }

  /**
   * The store refused records of `pending` for themselves (`error` is not an outage). Refuses those
   * records only: see the module comment.
   */
  #refused(pending: Pending, error: Error, shared: boolean): void {
    this.#release(pending);
    const refusal = error instanceof RecordRefusedError ? error : new RecordRefusedError(error.message, 'store_refused', []);
    const { batch } = pending;
    const named = refusal.rows.filter((row) => Number.isInteger(row) && row >= 0 && row < batch.length);
    if (named.length === 0 && shared && !pending.alone) {
      // Perhaps a neighbour's: a store may fail every batch of a kind for one record (MongoDB).
      pending.alone = true;
      this.#requeue([pending]);
      return;
    }
    if (pending.atomic) {
      this.#countRefused(batch.kind, refusal, named.length > 0 ? named.length : batch.length);
      this.#pendingRecords -= batch.length;
      pending.reject(new RecordsRefusedError(refusal.message, refusal.reason, named, 0));
      return;
    }
    // A device's records: refuse those named (or the one record), write the others again; when the
    // store named none, split in halves, each in a write of its own, until the refused one is alone.
    let refused: number[] = [];
    const parts: number[][] = [];
    if (batch.length === 1) refused = [0];
    else if (named.length > 0) {
      refused = named;
      let run: number[] = [];
      for (let row = 0, next = 0; row < batch.length; row++) {
        if (row === refused[next]) {
          next++;
          if (run.length > 0) parts.push(run);
          run = [];
        } else run.push(row);
      }
      if (run.length > 0) parts.push(run);
    } else {
      const half = Math.ceil(batch.length / 2);
      parts.push(range(0, half), range(half, batch.length));
    }
    const whole = pending.split?.whole ?? new Split(batch.length, pending.resolve, pending.reject);
    const rowOf = (row: number) => (pending.split === undefined ? row : pending.split.rows[row]!);
    if (refused.length > 0) this.#countRefused(batch.kind, refusal, refused.length);
    this.#pendingRecords -= refused.length;
    const alone = named.length === 0;
    const { existing } = pending;
    const replacements = parts.map((rows): Pending => {
      const split = { whole, rows: rows.map(rowOf) };
      return {
        seq: pending.seq,
        first: split.rows[0]!,
        batch: rowsOf(batch, rows),
        retryUntil: pending.retryUntil,
        atomic: false,
        // A part's rows are rows of `pending`, whose callback takes them back to the submitted batch's.
        existing: existing && ((found) => existing(found.map((row) => rows[row]!))),
        alone,
        split,
        resolve: (ids) => whole.stored(split.rows, ids),
        reject: (failure) => whole.failed(failure),
      };
    });
    this.#requeue(replacements);
    whole.refuse(refused.map(rowOf), refusal, replacements.length);
  }

  /** Counts refused records; logs the first of each reason, then at most once a minute how many more. */
  #countRefused(kind: KindName, refusal: RecordRefusedError, records: number): void {
    this.#metrics?.recordsRefused.inc({ kind, reason: refusal.reason }, records);
    let every = this.#refusalLogs.get(refusal.reason);
    if (every === undefined) this.#refusalLogs.set(refusal.reason, (every = new LogEvery(REFUSAL_LOG_INTERVAL_MS)));
    const count = every.count(records);
    if (count !== undefined) {
      this.#log?.warn(
        { kind, reason: refusal.reason, records: count, err: refusal.message },
        'the store refused records for themselves: they are not stored, their neighbours are; this reason is logged again at most once a minute',
      );
    }
  }

  /** Back in the queue, in submission order, ahead of what came after them. */
  #requeue(pending: Pending[]): void {
    this.#queue = mergeInOrder(pending, this.#queue, (p) => p);
  }

  /** Batches an outage failed: it holds those that may be retried; the others fail. */
  #failed(pending: Pending[], error: StoreUnavailableError): void {
    const held: Pending[] = [];
    for (const p of pending) {
      if (!this.#closed && p.retryUntil !== undefined && !p.retryUntil.aborted) held.push(p);
      else {
        this.#held.delete(p);
        this.#pendingRecords -= p.batch.length;
        p.reject(error);
      }
    }
    if (held.length === 0) return;
    if (this.#held.size === 0) {
      const records = held.reduce((n, p) => n + p.batch.length, 0);
      this.#log?.error({ err: error, kind: held[0]!.batch.kind, records }, 'the store did not take the records; reading is paused and they are retried');
    }
    for (const p of held) this.#held.add(p);
    this.#requeue(held);
    for (const signal of new Set(held.map((p) => p.retryUntil!))) signal.addEventListener('abort', this.#retryNow, { once: true });
    if (this.#retryTimer === undefined) {
      const delay = this.#backoff.next();
      this.#retryAt = Date.now() + delay;
      this.#retryTimer = setTimeout(this.#retryNow, delay);
    }
  }

  readonly #retryNow = (): void => {
    if (this.#retryTimer === undefined) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#flush();
  };
}

/** Submission order; the parts of one submission by their first row. */
const before = (a: Pending, b: Pending) => a.seq < b.seq || (a.seq === b.seq && a.first < b.first);

/** Two lists each in submission order, merged; `pendingOf` says which batch an entry stands for. */
function mergeInOrder<T>(a: T[], b: T[], pendingOf: (entry: T) => Pending): T[] {
  const merged: T[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && before(pendingOf(a[i]!), pendingOf(b[j]!)))) merged.push(a[i++]!);
    else merged.push(b[j++]!);
  }
  return merged;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** A batch of some rows of another. */
function rowsOf(batch: RecordBatch, rows: readonly number[]): RecordBatch {
  const part = new RecordBatch(batch.kind, rows.length);
  for (const row of rows) part.appendRowOf(batch, row);
  return part;
}
