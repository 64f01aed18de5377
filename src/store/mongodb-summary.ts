/**
 * The per-pack counts behind batteries() (the `battery_summary` collection), kept off the write path.
 *
 * A write used to answer only after a second round trip, the summary update, which on one
 * connection cut single POSTs from 535/s to 333/s on FerretDB. Now a write adds its counts here and
 * answers; the counts go to the server after the answer, coalesced: every pack's increments that
 * arrive within `delayMs` (or while an update is travelling) become one `$inc` per pack and kind, in
 * one bulk update. At most one update is in flight, so the summary never takes more than one
 * connection however fast records arrive, and what waits is bounded: at `maxPending` packs and kinds
 * it is sent at once rather than after the delay.
 *
 * The counts are eventually right, not at once: on this instance, batteries() and the retention
 * delete call flush() first, so they see every write this instance answered; another instance sees
 * them up to `delayMs` plus a round trip later. An update the server does not take (an outage) is
 * logged with what it lost and dropped, as before: failing the write instead would make producers
 * send stored records again. The store is told (`failed`) and recounts those packs from the records
 * once the server is back (MongoStore #recountAll); the increments are plain `$inc`s keyed by pack
 * and kind, so a recount can replace a document whole without coordinating with this queue beyond
 * a flush().
 */
import type { KindName } from '../records/kinds.js';

export interface SummaryIncrement {
  batteryId: string;
  kind: KindName;
  count: number;
  /** Newest timestamp among the counted records. */
  lastSeen: number;
}

export interface SummaryQueueOptions {
  /** Sends one coalesced update (bounded in time by the caller); rejects when the server did not take it. */
  write(increments: SummaryIncrement[]): Promise<void>;
  /** Told about an update that failed, with the increments it lost. */
  failed(error: unknown, lost: SummaryIncrement[]): void;
  /** How long increments wait to be coalesced with later ones. */
  delayMs: number;
  /** Packs × kinds waiting past which the update goes at once. */
  maxPending: number;
}

export class SummaryQueue {
  readonly #options: SummaryQueueOptions;
  #pending = new Map<string, SummaryIncrement>();
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #closed = false;

  constructor(options: SummaryQueueOptions) {
    this.#options = options;
  }

  /** Packs × kinds waiting to be sent. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Counts stored records of one kind, per pack; returns at once. */
  add(kind: KindName, counts: ReadonlyMap<string, { count: number; lastSeen: number }>): void {
    if (this.#closed) return;
    for (const [batteryId, { count, lastSeen }] of counts) {
      // `/` cannot occur in a battery id or a kind name: the key is unambiguous.
      const key = `${batteryId}/${kind}`;
      const waiting = this.#pending.get(key);
      if (waiting === undefined) this.#pending.set(key, { batteryId, kind, count, lastSeen });
      else {
        waiting.count += count;
        if (lastSeen > waiting.lastSeen) waiting.lastSeen = lastSeen;
      }
    }
    if (this.#inFlight !== undefined) return; // sent when the update in flight is done
    if (this.#pending.size >= this.#options.maxPending) void this.#send();
    else this.#arm();
  }

  /**
   * Resolves once everything added before the call has gone to the server, or failed (and was
   * logged): never rejects.
   */
  async flush(): Promise<void> {
    for (;;) {
      if (this.#inFlight !== undefined) {
        await this.#inFlight;
        continue;
      }
      if (this.#pending.size === 0) return;
      await this.#send();
      return;
    }
  }

  /** Sends what is waiting, then takes no more. */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    if (this.#timer !== undefined || this.#pending.size === 0 || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#inFlight === undefined) void this.#send();
    }, this.#options.delayMs);
    // A pending update never keeps a process alive; closing the store flushes it.
    this.#timer.unref();
  }

  #send(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = [...this.#pending.values()];
    this.#pending = new Map();
    const sent: Promise<void> = this.#options
      .write(batch)
      .catch((error: unknown) => this.#options.failed(error, batch))
      .finally(() => {
        this.#inFlight = undefined;
        if (this.#pending.size >= this.#options.maxPending) void this.#send();
        else this.#arm();
      });
    this.#inFlight = sent;
    return sent;
  }
}
