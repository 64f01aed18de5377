import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retentionCutoff } from '../../src/store/retention.js';
import { spawnService } from '../support/child-service.js';
import { build, buildApp, call } from '../support/helper.js';
import { tempDir } from '../support/temp-dir.js';
import { EXAMPLES } from './api-suite.js';

describe('durability', () => {
  it('keeps every acknowledged record through kill -9', async () => {
    const dataDir = tempDir();
    const first = await spawnService(['serve'], { DATA_DIR: dataDir });
    const acknowledged: string[] = [];
    let stop = false;
    // 8 producers post as fast as they can; the process is killed while they are at it.
    const producers = Array.from({ length: 8 }, async (_, p) => {
      for (let i = 0; !stop; i++) {
        try {
          const { status, body } = await call(first.url, '/api/battery-data', {
            body: { ...EXAMPLES['battery-data'], battery_id: `kill-${p}`, pack_voltage: i },
          });
          if (status === 200) acknowledged.push(`${p}:${i}:${body.id}`);
        } catch {
          return; // the server is gone
        }
      }
    });
    while (acknowledged.length < 300) await new Promise((resolve) => setTimeout(resolve, 10));
    first.child.kill('SIGKILL');
    await first.exited;
    stop = true;
    await Promise.all(producers);

    const second = await spawnService(['serve'], { DATA_DIR: dataDir });
    try {
      for (const entry of acknowledged) {
        const [p, i, id] = entry.split(':');
        const history = (await call(second.url, `/api/battery-data/history?battery_id=kill-${p}&limit=10000`)).body as { _id: string; pack_voltage: number }[];
        const found = history.find((record) => record._id === id);
        assert.ok(found, `acknowledged record ${entry} is missing after kill -9`);
        assert.equal(found.pack_voltage, Number(i));
      }
    } finally {
      second.child.kill('SIGTERM');
      assert.equal(await second.exited, 0, 'SIGTERM stops the service cleanly');
    }
  });

  it('keeps what it stored across a clean restart, and retention removes only old records', async (t) => {
    const dataDir = tempDir();
    const now = Date.now() / 1000;
    const first = await buildApp({ dataDir, retentionDays: 0 });
    const body = [40 * 86_400, 31 * 86_400, 29 * 86_400, 60].map((age) => ({ ...EXAMPLES['battery-data'], battery_id: 'retained', timestamp: now - age, pack_voltage: age }));
    assert.equal((await call(first, '/api/battery-data', { body })).status, 200);
    await first.close();

    const second = await build(t, { dataDir, retentionDays: 30 });
    const cutoff = retentionCutoff(Date.now() / 1000, 30);
    let ages: number[] = [];
    for (let tries = 0; tries < 100; tries++) {
      const history = (await call(second, '/api/battery-data/history?battery_id=retained&hours=2000')).body as { pack_voltage: number; timestamp: number }[];
      ages = history.map((record) => record.pack_voltage);
      if (history.every((record) => record.timestamp >= cutoff)) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(ages, [60, 29 * 86_400]);
    const [pack] = (await call(second, '/api/batteries')).body.batteries;
    assert.equal(pack.counts['battery-data'], 2);
  });
});
