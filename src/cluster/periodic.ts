/**
 * Periodic work (retention of records, of cleared alarms) once per period across all instances: on
 * MongoDB the instance that holds the work's lease runs it when the period since the last run (kept
 * in the lease document) has passed; it checks, and renews the lease, a few times per lease, so that
 * the lease moves to another instance within LEASE_SECONDS of its holder's death and the work stays
 * on time. On SQLite (one process, no leases) it runs at start and then every period.
 */
import type { Leases } from './leases.js';

export interface PeriodicLogger {
  warn(obj: object, msg?: string): void;
}

export interface PeriodicOptions {
  /** The lease's name, e.g. `periodic:retention`. */
  name: string;
  periodMs: number;
  /** Reports its own failures; a throw is logged as a failure to run. */
  run: () => Promise<void>;
  leases: Leases | undefined;
  logger: PeriodicLogger;
}

export interface Periodic {
  /** Stops; resolves once a run in progress has finished (and gives the lease up). */
  stop(): Promise<void>;
}

export function startPeriodic(options: PeriodicOptions): Periodic {
  const { name, periodMs, run, leases, logger } = options;
  let running: Promise<void> = Promise.resolve();
  let stopped = false;
  const runSafely = async () => {
    try {
      await run();
    } catch (error) {
      logger.warn({ err: (error as Error).message, work: name }, 'periodic work failed; it runs again next period');
    }
  };

  if (leases === undefined) {
    running = runSafely();
    const timer = setInterval(() => (running = runSafely()), periodMs);
    timer.unref();
    return {
      stop: () => {
        clearInterval(timer);
        return running;
      },
    };
  }

  let problem: string | undefined;
  const check = async () => {
    try {
      const lease = await leases.claim(name, 'periodic');
      problem = undefined;
      if (lease === undefined || stopped) return;
      const now = Date.now() / 1000;
      if (lease.last_run !== undefined && now - lease.last_run < periodMs / 1000) return;
      // Noted before it runs: an instance that dies mid-run does not have it run twice in a period.
      if (await leases.note(name, { last_run: now })) await runSafely();
    } catch (error) {
      const message = (error as Error).message;
      if (message !== problem) logger.warn({ err: message, work: name }, 'periodic work: cannot reach its lease; retrying');
      problem = message;
    }
  };
  const checkMs = Math.min(periodMs, (leases.leaseSeconds * 1000) / 3);
  running = check();
  const timer = setInterval(() => {
    // One check at a time: a slow run is not overtaken.
    running = running.then(check);
  }, checkMs);
  timer.unref();
  return {
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      await running;
      if (leases.holds(name)) await leases.release(name).catch(() => undefined);
    },
  };
}
