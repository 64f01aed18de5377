/**
 * Several instances: a reload of the pack specs another instance changed never lands over a spec edit
 * made here while it read the store (src/cluster/serial.ts). Real SQLite records and analytics stores;
 * the reload's read of the analytics store is held open until the local edit has been asked for.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AnalyticsEngine } from '../../src/analytics/analytics-engine.js';
import type { PackSpecs } from '../../src/analytics/pack-state.js';
import { openSqliteAnalyticsStore } from '../../src/analytics/sqlite-analytics-store.js';
import { AfterCommit } from '../../src/ingest/after-commit.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import { tempDir } from '../support/temp-dir.js';

const SPECS: PackSpecs = { nominal_capacity_ah: 75, cell_count: 108, full_charge_voltage: 442.8, empty_voltage: 324, end_of_life_soh: 80 };

describe('pack specs reloaded from the store', () => {
  it('a reload whose read began before a local edit does not undo the edit', async () => {
    const dataDir = tempDir();
    const records = await openSqliteStore(dataDir);
    const store = openSqliteAnalyticsStore(dataDir);
    const engine = new AnalyticsEngine({
      store,
      records,
      afterCommit: new AfterCommit(),
      ingest: { submit: async () => [] },
      defaults: SPECS,
      settings: { maxGapSeconds: 300, taperC: 0.05 },
    });
    try {
      await engine.live();
      // The other instance's change: the reload reads the stored specs (none yet), then waits.
      const readSpecs = store.loadSpecs;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let read = false;
      store.loadSpecs = async () => {
        const stored = await readSpecs();
        read = true;
        await held;
        return stored;
      };
      const reloading = engine.reloadSpecs();
      while (!read) await new Promise((resolve) => setTimeout(resolve, 5));
      // The edit asked for here meanwhile.
      const putting = engine.putSpecs('pack-race', { cell_count: 96 });
      await new Promise((resolve) => setTimeout(resolve, 50));
      release();
      await reloading;
      await putting;

      assert.deepEqual((await engine.overridesOf('pack-race'))?.overrides, { cell_count: 96 });
      assert.equal(engine.specsOf('pack-race').cell_count, 96);
    } finally {
      await engine.close();
      await records.close();
    }
  });
});
