/**
 * The catch-up after a restart when the records store does not answer at first (a MongoDB-wire server
 * away, or too busy to answer within the operation bound): the readings committed after the last save
 * are taken once the store answers, never skipped, and a further restart takes none of them twice.
 * Real stores: the records on FerretDB (suspended and resumed, see mongo-server.ts), the analytics
 * state in its SQLite file; the engine is driven directly so that the outage falls on the catch-up.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { AnalyticsEngine, type EngineLogger } from '../../src/analytics/analytics-engine.js';
import { advance, newPackAnalytics, type PackSpecs, type Reading } from '../../src/analytics/pack-state.js';
import { openSqliteAnalyticsStore } from '../../src/analytics/sqlite-analytics-store.js';
import { AfterCommit } from '../../src/ingest/after-commit.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { openMongoStore, type MongoStore } from '../../src/store/mongodb-store.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { startMongoServer } from '../support/mongo-server.js';
import { tempDir } from '../support/temp-dir.js';

const SPECS: PackSpecs = { nominal_capacity_ah: 75, cell_count: 108, full_charge_voltage: 442.8, empty_voltage: 324, end_of_life_soh: 80 };
const SETTINGS = { maxGapSeconds: 300, taperC: 0.05 };
const PACK = 'catch-up-1';
const BASE = Math.floor(Date.now() / 1000) - 7200;
/** 240 readings 30 s apart, charging at 10 A: the first half is in the saved state, the second only in the records. */
const READINGS: Reading[] = Array.from({ length: 240 }, (_, i) => ({ timestamp: BASE + i * 30, pack_voltage: 400, pack_current: 10, cell_temp: 25 }));
const SAVED = 120;

/** Settles with `promise`, or fails after `ms` (every wait here is bounded). */
async function within<T>(promise: Promise<T>, what: string, ms = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const server = await startMongoServer();
after(() => server.stop());

describe('analytics catch-up after a restart', { skip: server.suspend === undefined && 'needs a local server it can suspend (not MONGODB_TEST_URI)' }, () => {
  it('readings committed after the last save are taken once the records store answers, not skipped; a further restart takes none twice', async () => {
    const records: MongoStore = await openMongoStore({
      uri: server.uri,
      databaseName: `analytics_catch_up_${process.pid}`,
      retentionDays: 0,
      serverSelectionTimeoutMs: 300,
      operationTimeoutMs: 2000,
    });
    const dataDir = tempDir();
    const warnings: string[] = [];
    const logger: EngineLogger = { info() {}, warn: (_obj, msg) => warnings.push(msg ?? ''), error() {} };
    const engineOn = () =>
      new AnalyticsEngine({
        store: openSqliteAnalyticsStore(dataDir),
        records,
        afterCommit: new AfterCommit(),
        // The estimates go to the records store, as the ingest sink would put them.
        ingest: {
          async submit(batch) {
            const [outcome] = await records.write([batch]);
            if (!outcome!.ok) throw outcome!.error;
            return outcome!.ids;
          },
        },
        defaults: SPECS,
        settings: SETTINGS,
        logger,
      });
    try {
      const batch = new RecordBatch('battery-data', READINGS.length);
      for (const reading of READINGS) batch.append({ ...reading, battery_id: PACK }, Date.now() / 1000);
      const [written] = await records.write([batch]);
      assert.ok(written!.ok);
      // The state as a run that died after taking the first half would have saved it.
      const saved = newPackAnalytics(PACK);
      for (const reading of READINGS.slice(0, SAVED)) advance(saved, { ...reading }, SPECS, SETTINGS, Date.now() / 1000);
      const analyticsStore = openSqliteAnalyticsStore(dataDir);
      await analyticsStore.savePacks([saved], Date.now() / 1000);
      await analyticsStore.close();

      await server.suspend!();
      let engine = engineOn();
      let live = false;
      engine.live().then(() => (live = true));
      try {
        await until(() => warnings.length > 0, 'the engine to meet the records store away');
        // While the store stays away (longer than its operation bound), the estimates are not answered
        // from the state without the readings after the save: 503, still catching up (engine's own wait bound).
        await assert.rejects(engine.health(PACK), (error: Error) => error instanceof StoreUnavailableError && /catching up/.test(error.message));
        assert.equal(live, false, `live while the readings after the save are not taken: ${warnings.join('; ')}`);
        await server.resume!();
        await within(engine.live(), 'the catch-up once the store answers');
        const health = (await engine.health(PACK))!;
        assert.equal(health.readings, READINGS.length, 'every reading taken once');
        assert.equal(health.data_until, READINGS.at(-1)!.timestamp);
        assert.equal(health.gaps, 0);
      } finally {
        await engine.close();
      }

      // A clean stop saved the state: the next start reads back nothing it took already.
      engine = engineOn();
      try {
        await within(engine.live(), 'the catch-up of the third start');
        assert.equal((await engine.health(PACK))!.readings, READINGS.length, 'no reading taken twice');
      } finally {
        await engine.close();
      }
    } finally {
      await server.resume?.();
      await records.close();
    }
  });
});
