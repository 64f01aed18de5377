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
 * - After commit: each durable write is handed to the after-commit stage (after-commit.ts) in the
 *   order the writes were issued, and only then are its producers answered: whoever hears "stored"
 *   can count on subscribers (the live feed) having seen it.
 */
import { EventEmitter } from 'node:events';
import { StoreUnavailableError, type Store, type WriteOutcome } from '../store/store.js';
import { AfterCommit, type AfterCommitLogger, type StoredBatch } from './after-commit.js';
import { Backoff } from './backoff.js';
import type { RecordBatch } from './record-batch.js';
import { PendingBound, type RecordSink, type SubmitOptions } from './record-sink.js';

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
  /** Where store outages and failing after-commit subscribers are logged. */
  logger?: AfterCommitLogger & { info(obj: object, msg?: string): void };
  /** Delays between attempts while the store is away. */
  retryMinMs?: number;
  retryMaxMs?: number;
}

interface Pending {
  readonly seq: number;
  readonly batch: RecordBatch;
  readonly retryUntil: AbortSignal | undefined;
  resolve(ids: string[]): void;
  reject(error: Error): void;
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
  /** Submitted, not yet in a write, in submission order. */
  #queue: Pending[] = [];
  #pendingRecords = 0;
  /** Writes issued and not yet handed on, in the order issued. */
  readonly #writes: Write[] = [];
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
    this.afterCommit = new AfterCommit(options.logger);
  }

  /** Records submitted and not yet durable (or failed), in writes or waiting for one. */
  get pendingRecords(): number {
    return this.#pendingRecords;
  }

  get full(): boolean {
    return this.#bound.full;
  }

  /** Resolves with the batch's ids once it is durable and the after-commit stage has seen it; all of them or none. */
  submit(batch: RecordBatch, options: SubmitOptions = {}): Promise<string[]> {
    if (this.#closed) return Promise.reject(new Error('the ingest sink is closed'));
    if (batch.length === 0) return Promise.resolve([]);
    const { retryUntil } = options;
    if (retryUntil === undefined && this.full) return Promise.reject(this.#fullError());
    return new Promise((resolve, reject) => {
      this.#queue.push({ seq: this.#nextSeq++, batch, retryUntil, resolve, reject });
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
      if (room && !held && taken.length > 0 && records + pending.batch.length > this.#maxRecordsPerWrite) room = false;
      if (held || !room) left.push(pending);
      else {
        taken.push(pending);
        records += pending.batch.length;
      }
    }
    this.#queue = left;
    return taken;
  }

  #settle(write: Write, result: Write['result']): void {
    write.result = result;
    // Hand on in the order issued: a later write that finished first waits for the earlier one.
    while (this.#writes.length > 0 && this.#writes[0]!.result !== undefined) this.#handOn(this.#writes.shift()!);
    this.#bound.update(this.#pendingRecords, this.#held.size > 0);
    if (this.#pendingRecords === 0) for (const resolve of this.#idle.splice(0)) resolve();
    this.#flush();
  }

  #handOn(write: Write): void {
    const result = write.result!;
    if ('error' in result) {
      this.#failed(write.pending, result.error);
      return;
    }
    if (result.outcomes.some((outcome) => outcome.ok)) {
      // The store took a write: whatever is held need not wait for its timer.
      this.#backoff.reset();
      this.#retryNow();
    }
    const stored: StoredBatch[] = [];
    result.outcomes.forEach((outcome, i) => {
      if (outcome.ok) stored.push({ batch: write.pending[i]!.batch, ids: outcome.ids, existing: outcome.existing });
    });
    if (stored.length > 0) this.afterCommit.publish(stored);
    // A store that writes kinds apart (MongoDB) answers an outage per batch.
    const away: Pending[] = [];
    let outage: Error | undefined;
    result.outcomes.forEach((outcome, i) => {
      const pending = write.pending[i]!;
      if (!outcome.ok && outcome.error instanceof StoreUnavailableError) {
        away.push(pending);
        outage = outcome.error;
        return;
      }
      this.#pendingRecords -= pending.batch.length;
      if (this.#held.delete(pending) && this.#held.size === 0) this.#log?.info({}, 'the store takes records again; reading resumes');
      if (outcome.ok) pending.resolve(outcome.ids);
      else pending.reject(outcome.error);
    });
    if (outage !== undefined) this.#failed(away, outage);
  }

  /** Batches a write failed: an outage holds those that may be retried; the others fail. */
  #failed(pending: Pending[], error: Error): void {
    const outage = error instanceof StoreUnavailableError;
    const held: Pending[] = [];
    for (const p of pending) {
      if (outage && !this.#closed && p.retryUntil !== undefined && !p.retryUntil.aborted) held.push(p);
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
    // Back in submission order, ahead of what came after them.
    this.#queue = mergeBySeq(held, this.#queue);
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

function mergeBySeq(a: Pending[], b: Pending[]): Pending[] {
  const merged: Pending[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]!.seq < b[j]!.seq)) merged.push(a[i++]!);
    else merged.push(b[j++]!);
  }
  return merged;
}
