/**
 * The AnalyticsStore contract, run against every store (analytics-store-sqlite.test.ts and the MongoDB
 * suite in analytics-mongodb.test.ts): what is saved loads back as it was, after a reopen too.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnalyticsStore } from '../../src/analytics/analytics-store.js';
import { advance, newPackAnalytics, type PackAnalytics } from '../../src/analytics/pack-state.js';

export interface OpenedStore {
  store: AnalyticsStore;
  /** The same store opened anew (after the first is closed). */
  reopen(): Promise<AnalyticsStore>;
}

const specs = { nominal_capacity_ah: 75, cell_count: 108, full_charge_voltage: 442.8, empty_voltage: 324, end_of_life_soh: 80 };

/** A pack's state after a full anchor and some discharge: every field set, nested ones too. */
export function packState(batteryId: string, seconds = 600): PackAnalytics {
  const state = newPackAnalytics(batteryId);
  const settings = { maxGapSeconds: 60, taperC: 0.05 };
  advance(state, { timestamp: 1_700_000_000, pack_voltage: 445, pack_current: 1, cell_temp: 25 }, specs, settings, 1_700_000_100);
  for (let t = 30; t <= seconds; t += 30) {
    advance(state, { timestamp: 1_700_000_000 + t, pack_voltage: 400, pack_current: -37.5, cell_temp: NaN }, specs, settings, 1_700_000_100 + t);
  }
  return state;
}

export function analyticsStoreConformance(name: string, open: () => Promise<OpenedStore>): void {
  describe(`analytics store conformance: ${name}`, () => {
    it('a store never written to loads empty, with no time of a last save', async () => {
      const { store } = await open();
      try {
        assert.deepEqual(await store.load(), { packs: [], specs: [] });
      } finally {
        await store.close();
      }
    });

    it('saved states load back as they were, the newest save of each pack, after a reopen too', async () => {
      const { store, reopen } = await open();
      const first = packState('a', 300);
      await store.savePacks([first, packState('b')], 100);
      const later = packState('a', 900);
      await store.savePacks([later], 200);
      const sort = (packs: PackAnalytics[]) => [...packs].sort((x, y) => (x.battery_id < y.battery_id ? -1 : 1));
      assert.deepEqual(sort((await store.load()).packs), [later, packState('b')]);
      assert.equal((await store.load()).writtenAt, 200);
      await store.close();
      const again = await reopen();
      try {
        const loaded = await again.load();
        assert.deepEqual(sort(loaded.packs), [later, packState('b')]);
        assert.equal(loaded.packs.find((pack) => pack.battery_id === 'a')!.last!.cell_temp, null);
        assert.equal(loaded.writtenAt, 200);
      } finally {
        await again.close();
      }
    });

    it('spec overrides: put, replaced, and removed by an empty set', async () => {
      const { store, reopen } = await open();
      await store.putSpecs({ battery_id: 'a', overrides: { nominal_capacity_ah: 100 }, updated_at: 1 });
      await store.putSpecs({ battery_id: 'b', overrides: { cell_count: 96, end_of_life_soh: 70 }, updated_at: 2 });
      await store.putSpecs({ battery_id: 'a', overrides: { empty_voltage: 300 }, updated_at: 3 });
      await store.putSpecs({ battery_id: 'b', overrides: {}, updated_at: 4 });
      await store.close();
      const again = await reopen();
      try {
        assert.deepEqual((await again.load()).specs, [{ battery_id: 'a', overrides: { empty_voltage: 300 }, updated_at: 3 }]);
        // What another instance reloads when the specs' version moves: the same overrides, alone.
        assert.deepEqual(await again.loadSpecs(), [{ battery_id: 'a', overrides: { empty_voltage: 300 }, updated_at: 3 }]);
      } finally {
        await again.close();
      }
    });
  });
}
