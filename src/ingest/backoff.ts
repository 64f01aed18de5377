/**
 * The delays between retries after a failure: exponential from `minMs` to `maxMs`, each with "equal
 * jitter" (between half and all of it), so that many producers coming back at once do not retry in
 * step. The ingest sink (store outages), the spool (disk write failures) and the relay's forwarder
 * (the API away) all wait this way.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  /** Random source in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

export class Backoff {
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #next: number;

  constructor(options: BackoffOptions) {
    this.#minMs = options.minMs;
    this.#maxMs = options.maxMs;
    this.#random = options.random ?? Math.random;
    this.#next = options.minMs;
  }

  /** The delay before the next attempt; each call doubles the one after, up to maxMs. */
  next(): number {
    const delay = this.#next;
    this.#next = Math.min(this.#maxMs, delay * 2);
    return delay / 2 + this.#random() * (delay / 2);
  }

  /** After a success: the next failure starts again from minMs. */
  reset(): void {
    this.#next = this.#minMs;
  }
}
