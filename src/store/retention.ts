/**
 * Removes records older than RETENTION_DAYS at start-up and then hourly; 0 keeps everything. On
 * MongoDB with several instances, once per hour across them all: the holder of its lease runs it
 * (cluster/periodic.ts).
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Leases } from '../cluster/leases.js';
import { startPeriodic } from '../cluster/periodic.js';
import type { Store } from './store.js';

const HOUR = 3600;

/**
 * The cutoff is rounded down to a whole hour so that rollup buckets are removed whole, together
 * with the rows they sum: aggregates keep equalling the raw rows at the edge of retention.
 */
export function retentionCutoff(nowSeconds: number, days: number): number {
  return Math.floor((nowSeconds - days * 86_400) / HOUR) * HOUR;
}

/** Runs now (or when due, with leases) and then hourly; `stop()` resolves once a run in progress has finished (the store can then close). */
export function startRetention(
  store: Pick<Store, 'deleteOlderThan'>,
  days: number,
  log: FastifyBaseLogger,
  leases?: Leases,
): { stop(): Promise<void> } {
  if (days === 0) {
    log.info('retention off (RETENTION_DAYS=0): records are kept forever');
    return { stop: async () => {} };
  }
  const run = async () => {
    const cutoff = retentionCutoff(Date.now() / 1000, days);
    try {
      const deleted = await store.deleteOlderThan(cutoff);
      log.info({ deleted, cutoff, retention_days: days }, 'retention: removed old records');
    } catch (error) {
      log.warn({ err: (error as Error).message }, 'retention: could not remove old records; will retry in an hour');
    }
  };
  return startPeriodic({ name: 'periodic:retention', periodMs: HOUR * 1000, run, leases, logger: log });
}
