/**
 * Live fan-out: every stored batch is turned into Server-Sent Events text once, and each subscriber
 * gets the events it asked for (by pack and kind) in one write per batch. A subscriber that does not
 * keep up is dropped rather than allowed to grow the server's memory.
 */
import { toStoredRecord, type KindName, type NewRecord } from '../records/kinds.js';
import type { BatchWriter } from './batch-writer.js';

export interface Subscriber {
  batteryId?: string;
  kind?: KindName;
  /** Takes text; answers how many bytes are still queued for the client. */
  write(text: string): number;
  /** Called when the subscriber is dropped for being too slow. */
  drop(): void;
}

/** Queued bytes past which a client is considered stuck. */
export const MAX_QUEUED_BYTES = 4 * 1024 * 1024;

export class LiveFeed {
  readonly #subscribers = new Set<Subscriber>();
  readonly #unsubscribe: () => void;
  dropped = 0;

  constructor(writer: Pick<BatchWriter, 'onStored'>) {
    this.#unsubscribe = writer.onStored((kind, records, ids) => this.publish(kind, records, ids));
  }

  get size(): number {
    return this.#subscribers.size;
  }

  subscribe(subscriber: Subscriber): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  publish(kind: KindName, records: readonly NewRecord[], ids: readonly string[]): void {
    // Nobody listening (the usual case under heavy ingest): build nothing.
    if (this.#subscribers.size === 0) return;
    const events = records.map((record, i) => `event: ${kind}\nid: ${ids[i]}\ndata: ${JSON.stringify(toStoredRecord(kind, record, ids[i]!))}\n\n`);
    let all: string | undefined;
    for (const subscriber of this.#subscribers) {
      if (subscriber.kind !== undefined && subscriber.kind !== kind) continue;
      let text: string;
      if (subscriber.batteryId === undefined) text = all ??= events.join('');
      else text = events.filter((_, i) => records[i]!.battery_id === subscriber.batteryId).join('');
      if (text === '') continue;
      if (subscriber.write(text) > MAX_QUEUED_BYTES) {
        this.#subscribers.delete(subscriber);
        this.dropped++;
        subscriber.drop();
      }
    }
  }

  close(): void {
    this.#unsubscribe();
    this.#subscribers.clear();
  }
}
