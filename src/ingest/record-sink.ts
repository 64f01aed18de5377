/**
 * Where producers hand their records: one interface, two sinks. The store sink (store-sink.ts) in
 * the all-in-one process takes what HTTP POSTs and the TCP collector decode; the spool
 * (relay/spool.ts) takes what the standalone relay's collector decodes. Each does its own batching,
 * retrying and back-pressure, so producers only submit and, when told the sink is full, wait for
 * 'drained'.
 */
import type { RefusalReason } from '../store/store.js';
import type { RecordBatch } from './record-batch.js';

export interface SubmitOptions {
  /**
   * For producers that cannot be told to come back later (TCP devices): their batches are never
   * refused for a full queue, and through an outage (store away, disk failing) they are held and
   * retried with backoff until stored, or until this signal aborts (the producer is shutting down:
   * then they get one last attempt). Without it (HTTP, whose clients can retry) a full sink refuses
   * the batch at once and an outage fails it.
   */
  retryUntil?: AbortSignal;
  /**
   * Whether the batch is stored all or nothing (the default: an HTTP request, as its client was
   * promised). False for a stream of independent readings (TCP devices): a record the store refuses
   * for itself is then refused alone, and the batch's other records are stored.
   */
  atomic?: boolean;
  /**
   * Told the rows of the submitted batch (ascending) that the store held already by their
   * idempotency keys, so did not store again; called before the submission resolves, and only when
   * there are some. A sink that cannot tell (the spool) does not call it.
   */
  existing?: (rows: readonly number[]) => void;
}

export interface RecordSink {
  /** Resolves once the batch is durable; rejects with why it was not taken. */
  submit(batch: RecordBatch, options?: SubmitOptions): Promise<unknown>;
  /** Records taken and not yet durable (or failed). */
  readonly pendingRecords: number;
  /** True while producers should stop sending: wait for 'drained'. */
  readonly full: boolean;
  on(event: 'drained', listener: () => void): unknown;
  off(event: 'drained', listener: () => void): unknown;
}

/**
 * Records of a submitted batch the store refused for themselves (not an outage): sending them again
 * will not store them. An atomic batch (HTTP) stored nothing; a device's batch stored the others.
 */
export class RecordsRefusedError extends Error {
  override name = 'RecordsRefusedError';
  constructor(
    /** For the log: the store's words, secrets removed. */
    message: string,
    readonly reason: RefusalReason,
    /** The refused rows of the submitted batch, ascending; empty when the store could not say which (an atomic batch). */
    readonly rows: readonly number[],
    /** Records of the batch that are stored. */
    readonly stored: number,
  ) {
    super(message);
  }
}

/**
 * A sink's refusal that retrying will not fix (a full spool): the first `accepted` records were
 * taken (and are durable), the others are refused.
 */
export function isRefusal(error: unknown): error is Error & { reason: 'spool_full'; accepted: number } {
  return error instanceof Error && (error as { refused?: unknown }).refused === true;
}

/**
 * The back-pressure of a sink: full at `maxPendingRecords` pending or while failing; drained once
 * at or below half of that again and no longer failing. Half, so that producers resume with room
 * for a while rather than stop and start around one mark.
 */
export class PendingBound {
  readonly maxPendingRecords: number;
  readonly #onDrained: () => void;
  #full = false;

  constructor(maxPendingRecords: number, onDrained: () => void) {
    this.maxPendingRecords = maxPendingRecords;
    this.#onDrained = onDrained;
  }

  get full(): boolean {
    return this.#full;
  }

  /** Called whenever `pending` or `failing` changed. */
  update(pending: number, failing: boolean): void {
    if (!this.#full) {
      this.#full = failing || pending >= this.maxPendingRecords;
    } else if (!failing && pending <= this.maxPendingRecords / 2) {
      this.#full = false;
      this.#onDrained();
    }
  }
}
