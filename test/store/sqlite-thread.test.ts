/**
 * The side stores' SQLite files on a thread of their own (src/store/sqlite-thread.ts): a write that
 * waits (here on a lock another connection holds, as a slow sync to disk would) never holds the event
 * loop; its failure comes back as StoreUnavailableError naming the store; the next write lands; an
 * idle store keeps no process alive.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { ALARMS_FILE_NAME, openSqliteAlarmStore } from '../../src/alarms/sqlite-alarm-store.js';
import { ANALYTICS_FILE_NAME, openSqliteAnalyticsStore } from '../../src/analytics/sqlite-analytics-store.js';
import { openSqliteStreamPositions, STREAM_POSITIONS_FILE_NAME } from '../../src/collector/v2/stream-positions-sqlite.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { tempDir } from '../support/temp-dir.js';
import { webhook } from '../alarms/alarm-store-conformance.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Case {
  name: string;
  fileName: string;
  label: RegExp;
  /** Opens the store, writes once, reads the write back. */
  open(dir: string): { write(): Promise<unknown>; readBack(): Promise<boolean>; close(): Promise<void> };
}

const cases: Case[] = [
  {
    name: 'alarm store',
    fileName: ALARMS_FILE_NAME,
    label: /^alarm store .*alarms\.sqlite: database is locked/,
    open(dir) {
      const store = openSqliteAlarmStore(dir);
      return {
        write: () => store.putWebhook(webhook('w-thread')),
        readBack: async () => (await store.loadWebhooks()).some((w) => w.id === 'w-thread'),
        close: () => store.close(),
      };
    },
  },
  {
    name: 'analytics store',
    fileName: ANALYTICS_FILE_NAME,
    label: /^analytics store .*analytics\.sqlite: database is locked/,
    open(dir) {
      const store = openSqliteAnalyticsStore(dir);
      return {
        write: () => store.putSpecs({ battery_id: 'p-thread', overrides: { capacity_ah: 50 } } as never),
        readBack: async () => (await store.loadSpecs()).some((s) => s.battery_id === 'p-thread'),
        close: () => store.close(),
      };
    },
  },
  {
    name: 'v2 stream positions',
    fileName: STREAM_POSITIONS_FILE_NAME,
    label: /^stream positions .*v2-streams\.sqlite: database is locked/,
    open(dir) {
      const store = openSqliteStreamPositions(dir);
      return {
        write: () => store.save([{ batteryId: 'p-thread', streamId: 7n, sequence: 42n }]),
        readBack: async () => (await store.get('p-thread', 7n)) === 42n,
        close: () => store.close(),
      };
    },
  },
];

describe('side stores on a thread of their own', () => {
  for (const c of cases) {
    it(`${c.name}: a write waiting on the file never holds the event loop; it fails as an outage, and the next one lands`, async () => {
      const dir = tempDir();
      const store = c.open(dir);
      // Another connection holds the write lock: the store's write waits its busy timeout (1 s), then fails.
      const other = new Database(path.join(dir, c.fileName));
      other.exec('BEGIN IMMEDIATE');
      let turns = 0;
      const counting = setInterval(() => turns++, 1);
      try {
        await assert.rejects(store.write(), (error: Error) => {
          assert.ok(error instanceof StoreUnavailableError, `${error.name}: ${error.message}`);
          assert.match(error.message, c.label);
          return true;
        });
      } finally {
        clearInterval(counting);
      }
      // On the event loop the wait would have held it throughout: not one timer would have run.
      assert.ok(turns >= 10, `the event loop turned ${turns} times while the write waited`);
      other.exec('ROLLBACK');
      other.close();
      await store.write();
      assert.equal(await store.readBack(), true);
      await store.close();
    });
  }

  it('keeps no process alive once its calls are answered, and answers every call made before close', () => {
    const dir = tempDir();
    const script = `
      import { openSqliteAlarmStore } from './src/alarms/sqlite-alarm-store.ts';
      const store = openSqliteAlarmStore(${JSON.stringify(dir)});
      await store.putWebhook({ id: 'w1', url: 'http://127.0.0.1:9/', secret: 'x'.repeat(16), enabled: true, source: 'api', created_at: 1 });
      const loaded = store.loadWebhooks();
      console.log((await loaded).map((w) => w.id).join(','));
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.error, undefined, 'the process did not exit by itself within 30 s');
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'w1');
  });
});
