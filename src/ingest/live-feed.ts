/**
 * Live fan-out, an after-commit subscriber while it has clients: every commit is turned into
 * Server-Sent Events once, and each client gets the events it asked for (by pack and kind) in one
 * write per commit, per pack in timestamp order. A client that does not keep up is dropped rather
 * than allowed to grow the server's memory.
 *
 * The events are encoded once per commit into buffers that every client's write shares: a client
 * that reads slowly keeps references to them, not a copy of its own (a string written to a socket
 * that cannot take it at once is copied for that socket: 200 stuck clients and a few 10,000-record
 * POSTs held 1.6 GB that way).
 */
import type { KindName } from '../records/kinds.js';
import type { AfterCommit, CommittedRows } from './after-commit.js';

export interface Subscriber {
  batteryId?: string;
  kind?: KindName;
  /**
   * Takes the events of one commit, in order; the buffers are shared with other subscribers and
   * must not be changed. Answers how many bytes are queued for the client, these included.
   */
  write(events: readonly Buffer[]): number;
  /** Called when the subscriber is dropped for being too slow. */
  drop(): void;
}

/**
 * Bytes of earlier commits still queued for a client (past what its socket buffers took) when a new
 * commit comes, past which it is dropped. Earlier commits only: a client that has caught up takes a
 * whole commit, however large (a 10,000-record POST is about 2.5 MB of events), but one that stops
 * reading is dropped at the next commit, holding this much and that one commit. 256 KiB is a
 * second of a busy pack's events (1,000 records/s) and far more than a steady commit of a fleet
 * (tens of KB); the kernel's socket buffers come first and take as much again or more.
 */
export const MAX_QUEUED_BYTES = 256 * 1024;

export interface LiveFeedOptions {
  /** Called for each subscriber dropped for being too slow (a metric). */
  onDrop?: () => void;
}

export class LiveFeed {
  readonly #afterCommit: Pick<AfterCommit, 'subscribe'>;
  readonly #onDrop: () => void;
  readonly #subscribers = new Set<Subscriber>();
  /** Set while there are clients: with none (the usual case under heavy ingest) commits cost nothing here. */
  #unsubscribe: (() => void) | undefined;
  dropped = 0;

  constructor(afterCommit: Pick<AfterCommit, 'subscribe'>, options: LiveFeedOptions = {}) {
    this.#afterCommit = afterCommit;
    this.#onDrop = options.onDrop ?? (() => {});
  }

  get size(): number {
    return this.#subscribers.size;
  }

  subscribe(subscriber: Subscriber): () => void {
    this.#subscribers.add(subscriber);
    this.#unsubscribe ??= this.#afterCommit.subscribe((commit) => this.#publish(commit));
    return () => this.#remove(subscriber);
  }

  #remove(subscriber: Subscriber): void {
    this.#subscribers.delete(subscriber);
    if (this.#subscribers.size > 0) return;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  #publish(commit: readonly CommittedRows[]): void {
    const encoded = new Map<CommittedRows, Buffer>();
    const eventsOf = (rows: CommittedRows) => {
      let events = encoded.get(rows);
      if (events === undefined) {
        let text = '';
        for (let i = 0; i < rows.rows.length; i++) {
          const id = rows.ids[i]!;
          text += `event: ${rows.kind}\nid: ${id}\ndata: ${JSON.stringify(rows.rows.record(i, id))}\n\n`;
        }
        events = Buffer.from(text);
        encoded.set(rows, events);
      }
      return events;
    };
    for (const subscriber of this.#subscribers) {
      const events: Buffer[] = [];
      let bytes = 0;
      for (const rows of commit) {
        if (subscriber.kind !== undefined && subscriber.kind !== rows.kind) continue;
        if (subscriber.batteryId !== undefined && subscriber.batteryId !== rows.batteryId) continue;
        const chunk = eventsOf(rows);
        events.push(chunk);
        bytes += chunk.length;
      }
      if (events.length === 0) continue;
      // What was queued before this commit: the client's backlog (see MAX_QUEUED_BYTES).
      if (subscriber.write(events) - bytes > MAX_QUEUED_BYTES) {
        this.#remove(subscriber);
        this.dropped++;
        this.#onDrop();
        subscriber.drop();
      }
    }
  }

  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#subscribers.clear();
  }
}
