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

export interface UntilAnsweredOptions {
  /** Logged once, at the first failure (with the error's message), not at every retry. */
  warning: string;
  log?: { warn(obj: object, msg?: string): void };
  /** True once the caller is closed: no more attempts, and the answer is undefined. */
  closed(): boolean;
  /** Resolves when the caller closes: cuts a wait between attempts short. */
  closing: Promise<void>;
  /** Called at each failure (an engine tells its waiters that the first attempt failed). */
  failed?: () => void;
  minMs?: number;
  maxMs?: number;
}

/**
 * Runs `attempt` until it answers, waiting with a Backoff between failures (500 ms to 10 s unless
 * told) and warning once; undefined once closed. The engines' start (a store that is not there
 * yet) waits this way.
 */
export async function untilAnswered<T>(attempt: () => Promise<T>, options: UntilAnsweredOptions): Promise<T | undefined> {
  const backoff = new Backoff({ minMs: options.minMs ?? 500, maxMs: options.maxMs ?? 10_000 });
  let warned = false;
  while (!options.closed()) {
    try {
      return await attempt();
    } catch (error) {
      if (options.closed()) return undefined;
      if (!warned) options.log?.warn({ err: (error as Error).message }, options.warning);
      warned = true;
      options.failed?.();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, backoff.next()))), options.closing]);
      clearTimeout(timer);
    }
  }
  return undefined;
}
