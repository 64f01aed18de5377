/**
 * Write positions for the cluster feed (cluster-feed.ts, docs/deploy.md): every record the MongoDB
 * store inserts carries `written_at`, this instance's clock when the insert was sent, and this
 * instance publishes its floor, a position below which every write it sent has become visible or
 * never will. Readers take records strictly below the lowest floor of the live instances: nothing
 * below it can still appear, so a reader that has read up to it misses nothing, whatever order the
 * writes of several instances (two in flight each, retries through an outage) became visible in.
 *
 * - A write holds its position from the moment it is stamped until it answers.
 * - A write that failed as an outage (a timeout, a lost connection) may still be applied by the
 *   server later: its position is held DOUBT_MS more.
 * - Positions only grow, each write's past the last (a clock stepped back by NTP does not move them back), and never fall below
 *   what `raise` was told: an instance joining a cluster whose readers are past its clock writes
 *   above them.
 */

/** Positions of successive writes differ by at least this (a microsecond: doubles near 2e9 resolve 0.24 µs). */
const STEP = 1e-6;
/** How long the position of a write that failed as an outage is held: the server may still apply it. */
export const DOUBT_MS = 30_000;

export class WriteFloor {
  readonly #clock: () => number;
  /** Positions of writes in flight (a position may be held by several). */
  readonly #held = new Map<number, number>();
  /** Positions of failed writes, with when they stop being held (ms). */
  #doubtful: { position: number; until: number }[] = [];
  #last = 0;
  #lastStamped = -Infinity;

  constructor(clock: () => number = () => Date.now() / 1000) {
    this.#clock = clock;
  }

  /** A position for a write about to be sent, held until `release`. */
  stamp(): number {
    const position = this.#next();
    this.#lastStamped = position;
    this.#held.set(position, (this.#held.get(position) ?? 0) + 1);
    return position;
  }

  /** The write at `position` answered; `doubtful`: it failed as an outage and may still be applied. */
  release(position: number, doubtful: boolean): void {
    const count = this.#held.get(position) ?? 0;
    if (count <= 1) this.#held.delete(position);
    else this.#held.set(position, count - 1);
    if (doubtful) this.#doubtful.push({ position, until: Date.now() + DOUBT_MS });
  }

  /** Every write this instance sent at a position below this has become visible, or never will. */
  floor(): number {
    const nowMs = Date.now();
    if (this.#doubtful.length > 0) this.#doubtful = this.#doubtful.filter((entry) => entry.until > nowMs);
    let floor = this.#next();
    for (const position of this.#held.keys()) if (position < floor) floor = position;
    for (const { position } of this.#doubtful) if (position < floor) floor = position;
    return floor;
  }

  /** The position of the last write stamped; -Infinity before the first. */
  lastStamp(): number {
    return this.#lastStamped;
  }

  /** Later positions are at least `position` (joining a cluster whose clocks are ahead). */
  raise(position: number): void {
    if (position > this.#last) this.#last = position;
  }

  /** The clock, or just past the last position: no two writes of this instance share one. */
  #next(): number {
    const now = this.#clock();
    this.#last = Math.max(now, this.#last + STEP);
    return this.#last;
  }
}
