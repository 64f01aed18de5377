/**
 * Battery analytics through the service, written once and run against each store
 * (analytics-sqlite.test.ts, analytics-mongodb.test.ts).
 *
 * - Validation: the simulator's cycling scenario (a pack with a known truth: fading capacity, a
 *   current-sensor offset and noise) sends 210 cycles in simulated time, a reading every 30 s, as
 *   JSON messages over the collector's real TCP port; the service is restarted twice on the way (once
 *   cleanly, once as if it had died after records were committed but before its analytics state was
 *   saved). GET /health then matches the truth within the bounds, and every reading was
 *   taken exactly once.
 * - The API: counters on a known profile, gaps, backfill, 404, specs overrides, 422, keys.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { sendJsonMessages, simulateCycling, type CyclingMessage } from '../../src/simulator/cycling.js';
import type { Service } from '../../src/server.js';
import { openStore } from '../../src/store/open-store.js';
import { buildApp, call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

/** Settings of a store: `fresh` gives a new, empty one each call (a data directory, a database). */
export interface StoreSettings {
  fresh(): Partial<Config>;
}

/** Polls until `check` holds; fails after `ms` (every wait in these tests is bounded). */
async function until<T>(check: () => Promise<T | undefined | false>, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const health = async (target: FastifyInstance | string, batteryId: string) => {
  const answer = await call(target, `/api/batteries/${batteryId}/health`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
};

/**
 * Waits until the pack's newest reading taken is `timestamp`. Complete then: /health answers 503 until
 * the catch-up after a start is done, and the readings are sent in order. Bounded generously: on a busy
 * machine FerretDB takes a third of the run well over 30 s.
 */
const taken = (target: FastifyInstance | string, batteryId: string, timestamp: number) =>
  until(
    async () => {
      const answer = await call(target, `/api/batteries/${batteryId}/health`);
      return answer.status === 200 && answer.body.data_until === timestamp ? answer.body : undefined;
    },
    `readings of ${batteryId} up to ${timestamp} taken`,
    180_000,
  );

/** Whole seconds, an hour ago: readings stamped from here on are plausible and in order. */
const BASE = Math.floor(Date.now() / 1000) - 3600;

const reading = (timestamp: number, battery_id: string, pack_current: number, pack_voltage = 400) => ({
  timestamp,
  battery_id,
  pack_voltage,
  pack_current,
  cell_temp: 25,
});

async function post(app: FastifyInstance, records: object[], kind = 'battery-data'): Promise<void> {
  const answer = await call(app, `/api/${kind}`, { body: records });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

export function analyticsSuite(name: string, settings: StoreSettings): void {
  describe(`analytics on ${name}`, () => {
    it('after 210 simulated cycles and two restarts: health, cycles, remaining life and charge match the truth; each reading taken once', async () => {
      const overrides = { ...settings.fresh(), retentionDays: 0 };
      const [run] = simulateCycling({ batteryIds: ['cyc-1'], cycles: 210, fadePer100Cycles: 5, intervalSeconds: 30, seed: 3 });
      const { messages, truth } = run!;
      const thirds = [Math.floor(messages.length / 3), Math.floor((2 * messages.length) / 3)] as const;
      const send = async (service: Service, part: CyclingMessage[]) => {
        await sendJsonMessages('127.0.0.1', service.collector!.jsonPort, part);
      };

      // First third through the collector; a clean stop saves the state.
      let service = await startTestService(overrides, { collector: true });
      try {
        await send(service, messages.slice(0, thirds[0]));
        await taken(service.url, 'cyc-1', messages[thirds[0] - 1]!.timestamp);
      } finally {
        await service.close();
      }
      // Second third committed while analytics is not running (as when the process died after the
      // commit and before saving its state): the next start reads it back from the records store.
      const records = await openStore(service.app.config, { info() {}, warn() {} });
      try {
        // In parts the store takes within its operation bound on a busy machine (one insert of 35,000 took 10 s on FerretDB).
        const part = 5000;
        for (let start = thirds[0]; start < thirds[1]; start += part) {
          const batch = new RecordBatch('battery-data', part);
          for (const message of messages.slice(start, Math.min(start + part, thirds[1]))) batch.append({ ...message }, Date.now() / 1000);
          const [outcome] = await records.write([batch]);
          assert.ok(outcome!.ok, `the second third stored: ${outcome!.ok || outcome!.error.message}`);
        }
      } finally {
        await records.close();
      }
      service = await startTestService(overrides, { collector: true });
      try {
        await send(service, messages.slice(thirds[1]));
        const estimate = await taken(service.url, 'cyc-1', messages.at(-1)!.timestamp);

        assert.equal(estimate.readings, messages.length, `every reading taken once (${estimate.backfill_rows} taken as late, ${estimate.gaps} gaps)`);
        assert.equal(estimate.backfill_rows, 0);
        assert.equal(estimate.gaps, 0);
        const efc = estimate.equivalent_cycles.value;
        assert.ok(Math.abs(efc - truth.equivalent_cycles) / truth.equivalent_cycles < 0.02, `equivalent cycles ${efc} vs truth ${truth.equivalent_cycles}`);
        const soh = estimate.soh.value;
        assert.ok(Math.abs(soh - truth.soh) < 2, `SoH ${soh} vs truth ${truth.soh}`);
        assert.ok(estimate.soh.low <= soh && soh <= estimate.soh.high);
        assert.ok(estimate.soh.segments >= 400, `segments ${estimate.soh.segments}`);
        const rul = estimate.rul_cycles.value;
        const trueRul = truth.remainingCycles(80);
        assert.ok(Math.abs(rul - trueRul) / trueRul < 0.15, `remaining cycles ${rul} vs truth ${trueRul}`);
        assert.ok(estimate.rul_cycles.low <= rul && (estimate.rul_cycles.high === null || rul <= estimate.rul_cycles.high));
        assert.ok(estimate.rul_hours.value > 0);
        assert.ok(Math.abs(estimate.soc.value - truth.soc) < 5, `SoC ${estimate.soc.value} vs truth ${truth.soc}`);
        assert.ok(estimate.ah_out.value > 0 && estimate.wh_out.value > estimate.ah_out.value * 300);

        // The estimates as records, for the original's dashboard slots: latest performance and prediction.
        const performance = await until(async () => {
          const answer = await call(service.url, '/api/battery-performance/latest?battery_id=cyc-1');
          return answer.status === 200 && answer.body.cycle_count === Math.floor(efc) ? answer.body : undefined;
        }, 'the newest performance record');
        assert.equal(performance.source, 'battery_monitor_analytics');
        assert.ok(Math.abs(performance.health_score - soh) < 0.5);
        const prediction = (await call(service.url, '/api/battery-prediction/latest?battery_id=cyc-1')).body;
        assert.equal(prediction.source, 'battery_monitor_analytics');
        assert.ok(Math.abs(prediction.remaining_cycles - trueRul) / trueRul < 0.15);
        assert.ok(prediction.degradation_rate > 0);
        // Stored once each even though the restart took readings again whose records were already sent:
        // at most one performance record per segment and cycle count.
        const history = (await call(service.url, '/api/battery-performance/history?battery_id=cyc-1&hours=2400&limit=10000')).body as { cycle_count: number; health_score: number; timestamp: number }[];
        const keys = history.map((record) => `${record.timestamp}`);
        assert.equal(new Set(keys).size, keys.length);
      } finally {
        await service.close();
      }
    });

    it('503 with its reason and Retry-After when analytics is off; the records API still works', async () => {
      const off = await buildApp({ ...settings.fresh(), analyticsEnabled: false });
      try {
        await post(off, [reading(BASE, 'off-1', 1)]);
        const answer = await call(off, '/api/batteries/off-1/health');
        assert.equal(answer.status, 503);
        assert.match(answer.body.detail, /analytics is off/);
        assert.equal(answer.headers.get('retry-after'), '5');
      } finally {
        await off.close();
      }
    });

    describe('through the API', () => {
      let app: FastifyInstance;
      before(async () => {
        app = await buildApp(settings.fresh());
      });
      after(() => app.close());

      it('404 for an unknown pack; a pack stored but not analysed answers nulls with reasons', async () => {
        const unknown = await call(app, '/api/batteries/nope-1/health');
        assert.equal(unknown.status, 404);
        assert.match(unknown.body.detail, /nope-1/);
        await post(app, [{ timestamp: BASE, battery_id: 'perf-only', pack_voltage: 400, pack_current: 0, cell_temp: 25, capacity_remaining: 50, cycle_count: 1, age_months: 1, health_score: 90 }], 'battery-performance');
        const empty = await health(app, 'perf-only');
        assert.equal(empty.soh.value, null);
        assert.match(empty.soh.reason, /anchor/);
        assert.equal(empty.ah_in.value, null);
        assert.equal(empty.readings, 0);
      });

      it('charge and energy: trapezoids, split at a zero crossing; a gap over the limit not integrated and counted; backfill counted, not integrated', async () => {
        // 10 A in for an hour at 400 V (readings every 30 s), then 20 A out for half an hour.
        const rows = [];
        for (let t = 0; t <= 3600; t += 30) rows.push(reading(BASE + t, 'ah-1', 10));
        // From +10 A to -20 A in 30 s: 10 s of charge (50 As), 20 s of discharge (200 As).
        for (let t = 3630; t <= 5430; t += 30) rows.push(reading(BASE + t, 'ah-1', -20));
        await post(app, rows);
        let answer = await health(app, 'ah-1');
        assert.equal(answer.ah_in.value, Math.round((10 + 50 / 3600) * 1e4) / 1e4);
        assert.equal(answer.ah_out.value, Math.round((10 + 200 / 3600) * 1e4) / 1e4);
        assert.equal(answer.wh_in.value, Math.round((4000 + (400 * 50) / 3600) * 1e4) / 1e4);
        assert.equal(answer.equivalent_cycles.value, Math.round(((answer.ah_in.value + answer.ah_out.value) / 2 / 75) * 1e4) / 1e4);
        assert.equal(answer.soc.value, null);
        assert.match(answer.soc.reason, /no anchor/);
        assert.equal(answer.readings, rows.length);

        // 10 minutes later (over ANALYTICS_MAX_GAP_SECONDS): not integrated, counted.
        await post(app, [reading(BASE + 6030, 'ah-1', -20), reading(BASE + 6060, 'ah-1', -20)]);
        answer = await health(app, 'ah-1');
        assert.equal(answer.gaps, 1);
        assert.equal(answer.gap_seconds, 600);
        assert.equal(answer.ah_out.value, Math.round((10 + 200 / 3600 + (20 * 30) / 3600) * 1e4) / 1e4);

        // Older than what was taken: stored, counted, not integrated.
        await post(app, [reading(BASE + 100, 'ah-1', 300), reading(BASE + 130, 'ah-1', 300)]);
        const after = await health(app, 'ah-1');
        assert.equal(after.backfill_rows, 2);
        assert.equal(after.ah_in.value, answer.ah_in.value);
        assert.equal(after.readings, answer.readings);
      });

      it('state of charge: unknown until full, then counted from 100 % with an interval that grows with the charge counted', async () => {
        // Full: at or above 442.8 V (108 cells x 4.1 V) with the current below C/20 (3.75 A).
        const rows = [reading(BASE, 'soc-1', 2, 445), reading(BASE + 30, 'soc-1', 1, 446)];
        for (let t = 60; t <= 1860; t += 30) rows.push(reading(BASE + t, 'soc-1', -75, 400));
        await post(app, rows);
        const answer = await health(app, 'soc-1');
        assert.equal(answer.anchors, 2);
        // From the anchor at +1 A: the ramp to -75 A crosses zero 30/76 s in, then 75 A out for 30 min.
        const inAs = 30 / 76 / 2;
        const outAs = (75 * (30 - 30 / 76)) / 2 + 75 * 1800;
        assert.ok(Math.abs(answer.soc.value - (100 + ((inAs - outAs) / 3600 / 75) * 100)) < 0.001, JSON.stringify(answer.soc));
        assert.ok(answer.soc.low < answer.soc.value && answer.soc.value < answer.soc.high);
        assert.ok(answer.soc.high - answer.soc.low > 2 * 0.01 * 100, 'the interval grew past the anchor error alone');
        assert.equal(answer.soh.value, null);
        assert.match(answer.soh.reason, /no segment/);
      });

      it('specs: defaults from the specs file; a PUT overrides per pack, changes the estimates at once; 422 names the field', async () => {
        const defaults = await call(app, '/api/batteries/spec-1/specs');
        assert.equal(defaults.status, 200);
        assert.deepEqual(defaults.body.specs, { nominal_capacity_ah: 75, cell_count: 108, full_charge_voltage: 442.8, empty_voltage: 324, end_of_life_soh: 80 });
        assert.deepEqual(defaults.body.overrides, {});
        assert.equal(defaults.body.updated_at, null);

        await post(app, Array.from({ length: 121 }, (_, i) => reading(BASE + i * 30, 'spec-1', 30)));
        assert.equal((await health(app, 'spec-1')).equivalent_cycles.value, 0.2);
        const put = await call(app, '/api/batteries/spec-1/specs', { method: 'PUT', body: { nominal_capacity_ah: 150, cell_count: 96 } });
        assert.equal(put.status, 200, JSON.stringify(put.body));
        assert.deepEqual(put.body.overrides, { nominal_capacity_ah: 150, cell_count: 96 });
        // Voltages per cell scale with the cell count when not given.
        assert.equal(put.body.specs.full_charge_voltage, 393.6);
        assert.equal((await health(app, 'spec-1')).equivalent_cycles.value, 0.1);
        assert.equal((await call(app, '/api/batteries/spec-1/specs')).body.specs.nominal_capacity_ah, 150);
        assert.equal((await call(app, '/api/batteries/spec-2/specs')).body.specs.nominal_capacity_ah, 75);

        const bad = await call(app, '/api/batteries/spec-1/specs', { method: 'PUT', body: { cell_count: 0, colour: 'red' } });
        assert.equal(bad.status, 422);
        assert.deepEqual(bad.body.detail.map((entry: { loc: string[] }) => entry.loc.join('.')).sort(), ['body.cell_count', 'body.colour']);
        const inverted = await call(app, '/api/batteries/spec-1/specs', { method: 'PUT', body: { empty_voltage: 500 } });
        assert.equal(inverted.status, 422);
        assert.deepEqual(inverted.body.detail[0].loc, ['body', 'empty_voltage']);
        const badId = await call(app, '/api/batteries/no%20spaces/specs', { method: 'PUT', body: {} });
        assert.equal(badId.status, 422);
        // {} removes the overrides.
        const reset = await call(app, '/api/batteries/spec-1/specs', { method: 'PUT', body: {} });
        assert.equal(reset.body.specs.nominal_capacity_ah, 75);
        assert.equal(reset.body.updated_at, null);
      });

      it('the OpenAPI document describes the routes', async () => {
        const document = (await call(app, '/openapi.json')).body;
        assert.ok(document.paths['/api/batteries/{battery_id}/health'].get);
        assert.ok(document.paths['/api/batteries/{battery_id}/specs'].put.requestBody);
      });
    });

    it('a PUT of specs needs API_KEY when it is set', async () => {
      const app = await buildApp({ ...settings.fresh(), apiKey: 'k-123456789' });
      try {
        assert.equal((await call(app, '/api/batteries/p/specs', { method: 'PUT', body: {} })).status, 401);
        assert.equal((await call(app, '/api/batteries/p/specs', { method: 'PUT', body: {}, headers: { 'x-api-key': 'k-123456789' } })).status, 200);
        assert.equal((await call(app, '/api/batteries/p/specs')).status, 200);
      } finally {
        await app.close();
      }
    });
  });
}
