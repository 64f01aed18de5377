/**
 * Group commit. Every producer (HTTP POSTs, the TCP collector) submits its records here; while one
 * write is in flight, new submissions queue, and the next write takes all of them at once. Under
 * load many requests share one durable transaction, so the cost of a sync to disk is paid once per
 * batch instead of once per request, and no request waits longer than one write plus its own.
 */
import type { KindName, NewRecord } from '../records/kinds.js';
import type { Store, WriteRequest } from '../store/store.js';

interface Pending extends WriteRequest {
  resolve(ids: string[]): void;
  reject(error: Error): void;
}

/**
 * Gets the records a write stored, with their ids; builds API-shaped records only if it needs them.
 * Records skipped because their idempotency key was stored already are not among them: a retried
 * request reaches listeners with nothing, or with only what the first try had not stored.
 */
export type StoredListener = (kind: KindName, records: readonly NewRecord[], ids: readonly string[]) => void;

export interface BatchWriterOptions {
  /** Upper bound on records in one store write; a larger queue is written in several. */
  maxRecordsPerWrite?: number;
  /**
   * Writes handed to the store before the first is done. With two, the next batch is already on its
   * way while a write is in progress: for a store across a network (MongoDB, Atlas) that hides one
   * round trip per batch. The SQLite writer thread commits them one after the other, in order; on
   * this machine SQLite measured the same with one or two (about 17,000 single POSTs/s either way).
   */
  maxWritesInFlight?: number;
}

export class BatchWriter {
  readonly #store: Pick<Store, 'write'>;
  readonly #maxRecordsPerWrite: number;
  readonly #maxWritesInFlight: number;
  readonly #listeners = new Set<StoredListener>();
  #queue: Pending[] = [];
  #queuedRecords = 0;
  readonly #inFlight = new Set<Promise<void>>();
  #scheduled = false;
  #closed = false;

  constructor(store: Pick<Store, 'write'>, options: BatchWriterOptions = {}) {
    this.#store = store;
    this.#maxRecordsPerWrite = options.maxRecordsPerWrite ?? 50_000;
    this.#maxWritesInFlight = options.maxWritesInFlight ?? 2;
  }

  /** Records queued and not yet durable: producers use it to apply back-pressure. */
  get pendingRecords(): number {
    return this.#queuedRecords;
  }

  /** Called with what each write stored, after it is durable (live push, metrics); never with nothing. */
  onStored(listener: StoredListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves with the records' ids once they are durable; all of them or none. */
  submit(kind: KindName, records: NewRecord[]): Promise<string[]> {
    if (this.#closed) return Promise.reject(new Error('the writer is closed'));
    if (records.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.#queue.push({ kind, records, resolve, reject });
      this.#queuedRecords += records.length;
      this.#schedule();
    });
  }

  /** Writes what is queued, waits for it, then refuses new submissions. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#inFlight.size > 0 || this.#queue.length > 0) {
      this.#flush();
      await Promise.race(this.#inFlight);
    }
  }

  #schedule(): void {
    if (this.#inFlight.size >= this.#maxWritesInFlight || this.#scheduled) return;
    // Wait one turn of the event loop so that submissions of the same tick share the write.
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    if (this.#queue.length === 0 || this.#inFlight.size >= this.#maxWritesInFlight) return;
    const batch: Pending[] = [];
    let records = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!;
      if (batch.length > 0 && records + next.records.length > this.#maxRecordsPerWrite) break;
      batch.push(this.#queue.shift()!);
      records += next.records.length;
    }
    this.#queuedRecords -= records;
    const write: Promise<void> = this.#write(batch).finally(() => {
      this.#inFlight.delete(write);
      this.#flush();
    });
    this.#inFlight.add(write);
  }

  async #write(batch: Pending[]): Promise<void> {
    let outcomes;
    try {
      outcomes = await this.#store.write(batch);
    } catch (error) {
      for (const pending of batch) pending.reject(error as Error);
      return;
    }
    batch.forEach((pending, index) => {
      const outcome = outcomes[index]!;
      if (!outcome.ok) {
        pending.reject(outcome.error);
        return;
      }
      pending.resolve(outcome.ids);
      if (this.#listeners.size === 0) return;
      let { records } = pending;
      let ids: readonly string[] = outcome.ids;
      if (outcome.existing.length > 0) {
        const skip = new Set(outcome.existing);
        records = records.filter((_, i) => !skip.has(i));
        ids = ids.filter((_, i) => !skip.has(i));
        if (records.length === 0) return;
      }
      for (const listener of this.#listeners) listener(pending.kind, records, ids);
    });
  }
}
