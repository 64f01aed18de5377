/**
 * Rate-limited logging for events that can come thousands a second (connections refused, records
 * a full spool refuses): count every one, log at most one line per interval, saying how many.
 */
export class LogEvery {
  readonly #intervalMs: number;
  #count = 0;
  #last = -Infinity;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** Counts `n` events; answers how many were counted since the last line when a line is due now. */
  count(n = 1, now = Date.now()): number | undefined {
    this.#count += n;
    if (now - this.#last < this.#intervalMs) return undefined;
    const count = this.#count;
    this.#last = now;
    this.#count = 0;
    return count;
  }
}
