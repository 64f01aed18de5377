/**
 * The collector's side of a record sink: hands each decoded batch over, counts what became durable
 * and what was dropped, and turns the sink's back-pressure into TCP flow control: when the sink is
 * full, every socket is paused (so devices' sends block in their kernels, not in our memory) until
 * the sink says 'drained'. Retrying through an outage is the sink's job: devices cannot be told to
 * come back, so their batches ask to be retried until the collector closes. A device's readings are
 * independent of each other (not atomic): a record the store refuses for itself is dropped alone,
 * and the connection goes on.
 */
import type { RecordBatch } from '../ingest/record-batch.js';
import { isRefusal, RecordsRefusedError, type RecordSink } from '../ingest/record-sink.js';
import type { ListenerCounters } from './listener-counters.js';
import type { CollectorLogger } from './logger.js';
import type { CollectorMetrics, ListenerName } from './metrics.js';

export interface SubmitterOptions {
  sink: RecordSink;
  counters: Record<ListenerName, ListenerCounters>;
  metrics: Pick<CollectorMetrics, 'backpressure'>;
  log: CollectorLogger;
  /** Stop reading every socket. */
  pause(): void;
  /** Read again. */
  resume(): void;
}

export class Submitter {
  readonly #options: SubmitterOptions;
  readonly #inFlight = new Set<Promise<void>>();
  /** Aborted at close: batches the sink still holds get one last attempt, then count as lost. */
  readonly #closing = new AbortController();
  #paused = false;

  constructor(options: SubmitterOptions) {
    this.#options = options;
    options.sink.on('drained', this.#resume);
  }

  /** True while reading is paused for back-pressure. */
  get paused(): boolean {
    return this.#paused;
  }

  submit(listener: ListenerName, batch: RecordBatch): void {
    const { sink, counters, log } = this.#options;
    const { kind, length } = batch;
    counters[listener].accepted(kind).inc(length);
    const done = sink.submit(batch, { retryUntil: this.#closing.signal, atomic: false }).then(
      () => counters[listener].stored(kind).inc(length),
      (error: unknown) => {
        if (error instanceof RecordsRefusedError) {
          // The sink counts and logs (rate-limited) what the store refused; the rest is stored.
          counters[listener].stored(kind).inc(error.stored);
          counters[listener].rejected('store_refused').inc(length - error.stored);
          return;
        }
        if (isRefusal(error)) {
          // The sink logs its refusals (rate-limited); here they are counted.
          if (error.accepted > 0) counters[listener].stored(kind).inc(error.accepted);
          counters[listener].rejected(error.reason).inc(length - error.accepted);
          return;
        }
        counters[listener].rejected('store_failed').inc(length);
        const why = this.#closing.signal.aborted ? 'the store failed while the collector was closing' : 'the store failed';
        log.error({ err: error, kind, records: length }, `records lost: ${why}`);
      },
    );
    const tracked = done.finally(() => this.#inFlight.delete(tracked));
    this.#inFlight.add(tracked);
    if (sink.full && !this.#paused) {
      this.#paused = true;
      this.#options.metrics.backpressure.set(1);
      log.debug({ pending: sink.pendingRecords }, 'reading paused: the sink is behind');
      this.#options.pause();
    }
  }

  /** Resolves once every batch handed over so far is durable in the sink, or counted as dropped. */
  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  /** After the last batch: what the sink holds through an outage gets one last attempt; waits for all. */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.drain();
    this.#options.sink.off('drained', this.#resume);
  }

  readonly #resume = (): void => {
    if (!this.#paused) return;
    this.#paused = false;
    this.#options.metrics.backpressure.set(0);
    this.#options.log.debug({ pending: this.#options.sink.pendingRecords }, 'reading resumed');
    this.#options.resume();
  };
}
