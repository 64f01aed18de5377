/**
 * Live fan-out, an after-commit subscriber while it has clients: every commit is turned into
 * Server-Sent Events text once, and each client gets the events it asked for (by pack and kind) in
 * one write per commit, per pack in timestamp order. A client that does not keep up is dropped
 * rather than allowed to grow the server's memory.
 */
import type { KindName } from '../records/kinds.js';
import type { AfterCommit, CommittedRows } from './after-commit.js';

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
  readonly #afterCommit: Pick<AfterCommit, 'subscribe'>;
  readonly #subscribers = new Set<Subscriber>();
  /** Set while there are clients: with none (the usual case under heavy ingest) commits cost nothing here. */
  #unsubscribe: (() => void) | undefined;
  dropped = 0;

  constructor(afterCommit: Pick<AfterCommit, 'subscribe'>) {
    this.#afterCommit = afterCommit;
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
    const texts = new Map<CommittedRows, string>();
    const textOf = (rows: CommittedRows) => {
      let text = texts.get(rows);
      if (text === undefined) {
        text = '';
        for (let i = 0; i < rows.rows.length; i++) {
          const id = rows.ids[i]!;
          text += `event: ${rows.kind}\nid: ${id}\ndata: ${JSON.stringify(rows.rows.record(i, id))}\n\n`;
        }
        texts.set(rows, text);
      }
      return text;
    };
    for (const subscriber of this.#subscribers) {
      let text = '';
      for (const rows of commit) {
        if (subscriber.kind !== undefined && subscriber.kind !== rows.kind) continue;
        if (subscriber.batteryId !== undefined && subscriber.batteryId !== rows.batteryId) continue;
        text += textOf(rows);
      }
      if (text === '') continue;
      if (subscriber.write(text) > MAX_QUEUED_BYTES) {
        this.#remove(subscriber);
        this.dropped++;
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
