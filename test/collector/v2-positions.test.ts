/**
 * v2 stream positions on both stores (a SQLite file; a MongoDB-wire server, FerretDB): a stream's
 * highest acknowledged sequence survives a reopen and never moves back; and through the service, a
 * device resumes after a clean restart where it left off.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StreamPositions } from '../../src/collector/v2/stream-positions.js';
import { MongoStreamPositions } from '../../src/collector/v2/stream-positions-mongodb.js';
import { openSqliteStreamPositions } from '../../src/collector/v2/stream-positions-sqlite.js';
import type { Config } from '../../src/config.js';
import { mongoForTests } from '../support/mongo-server.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';
import { V2Device } from '../support/v2-device.js';
import { stored } from './v2-support.js';

const { server, freshDatabase } = await mongoForTests('v2_positions_test');

const stores: [string, () => { open: () => StreamPositions; config: Partial<Config> }][] = [
  [
    'sqlite',
    () => {
      const dataDir = tempDir();
      return { open: () => openSqliteStreamPositions(dataDir), config: { dataDir } };
    },
  ],
  [
    `mongodb on ${server.description}`,
    () => {
      const databaseName = freshDatabase();
      return { open: () => new MongoStreamPositions({ uri: server.uri, databaseName }), config: { mongodbUri: server.uri, databaseName, dataDir: tempDir() } };
    },
  ],
];

for (const [name, fresh] of stores) {
  describe(`v2 stream positions on ${name}`, () => {
    it('answers 0 for a new stream, keeps the highest sequence saved across a reopen, never moves back', async () => {
      const { open } = fresh();
      const positions = open();
      try {
        assert.equal(await positions.get('pack-1', 1n), 0n);
        await positions.save([
          { batteryId: 'pack-1', streamId: 1n, sequence: 41n },
          { batteryId: 'pack-1', streamId: 0xffff_ffff_ffff_ffffn, sequence: 0xffff_ffff_ffff_fffen },
          { batteryId: 'pack-2', streamId: 1n, sequence: 9n },
        ]);
        await positions.save([{ batteryId: 'pack-1', streamId: 1n, sequence: 42n }]);
        await positions.save([{ batteryId: 'pack-1', streamId: 1n, sequence: 7n }]);
        // 9 < 10 as numbers though "9" > "10" as text.
        await positions.save([{ batteryId: 'pack-2', streamId: 1n, sequence: 10n }]);
      } finally {
        await positions.close();
      }
      const reopened = open();
      try {
        assert.equal(await reopened.get('pack-1', 1n), 42n);
        assert.equal(await reopened.get('pack-1', 0xffff_ffff_ffff_ffffn), 0xffff_ffff_ffff_fffen);
        assert.equal(await reopened.get('pack-2', 1n), 10n);
        assert.equal(await reopened.get('pack-2', 2n), 0n);
      } finally {
        await reopened.close();
      }
    });

    it('through the service: after a restart on the same store, the device resumes after its last acknowledged frame', async (t) => {
      const { config } = fresh();
      const overrides: Partial<Config> = { ...config, logLevel: 'silent', collectorV2Port: 0 };
      const first = await startTestService(overrides, { collector: true });
      const device = new V2Device('pack-restart');
      try {
        await device.connect(first.collector!.v2Port!);
        for (let i = 1; i <= 20; i++) device.push({ type: 1, timestamp: Date.now() / 1000, fields: { pack_voltage: i, pack_current: 0, cell_temp: 20 } });
        await device.allAcked();
      } finally {
        device.disconnect();
        await first.close();
      }
      const second = await startTestService(overrides, { collector: true });
      t.after(() => second.close());
      const answer = await device.connect(second.collector!.v2Port!);
      assert.equal(answer.resumeAfter, 20n);
      device.push({ type: 1, timestamp: Date.now() / 1000, fields: { pack_voltage: 21, pack_current: 0, cell_temp: 20 } });
      await device.allAcked();
      device.disconnect();
      assert.equal((await stored(second, 'battery-data', 'pack-restart')).length, 21);
    });
  });
}
