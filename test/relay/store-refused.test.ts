/**
 * The relay and a record the API's store refuses: the API answers the relay's batch 422
 * `value_error.store_refused` naming it (a request is stored all or nothing), and the relay sends the
 * rest of the batch again without it. Before, the whole batch (up to 10,000 records) was dropped for
 * one. A real service on a real SQLite file, made to refuse one record by a trigger the test adds.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { createCollectorMetrics } from '../../src/collector/metrics.js';
import { loadConfig } from '../../src/config.js';
import { startStandaloneCollector } from '../../src/relay/collect.js';
import { storeRefusedRows } from '../../src/relay/forwarder.js';
import { createSchema } from '../../src/store/sqlite-schema.js';
import { SQLITE_FILE_NAME } from '../../src/store/sqlite-store.js';
import { eventually, recordingLogger, sendChunks } from '../collector/helpers.js';
import { startTestService } from '../support/service.js';
import { relayEnv } from '../support/relay-env.js';
import { tempDir } from '../support/temp-dir.js';

test('a 422 is read as store refusals only when every detail is one, with a row', () => {
  const detail = (...entries: object[]) => JSON.stringify({ detail: entries });
  assert.deepEqual(storeRefusedRows(detail({ loc: ['body', 3], type: 'value_error.store_refused' }, { loc: ['body', 7], type: 'value_error.store_refused' })), [3, 7]);
  assert.equal(storeRefusedRows(detail({ loc: ['body', 3], type: 'value_error.store_refused' }, { loc: ['body', 4, 'pack_voltage'], type: 'type_error' })), undefined);
  assert.equal(storeRefusedRows(detail({ loc: ['body'], type: 'value_error.store_refused' })), undefined);
  assert.equal(storeRefusedRows(detail()), undefined);
  assert.equal(storeRefusedRows('not json'), undefined);
});

test('the relay drops only the record the store refused and delivers the rest of its batch', async (t) => {
  const apiDir = tempDir('relay-refused-api-');
  const db = new Database(path.join(apiDir, SQLITE_FILE_NAME));
  createSchema(db);
  db.exec(`CREATE TRIGGER test_poison BEFORE INSERT ON battery_data WHEN NEW.source = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END`);
  db.close();
  const api = await startTestService({ dataDir: apiDir, logLevel: 'silent' });
  t.after(() => api.close());

  const relayDir = tempDir('relay-refused-');
  const metrics = createCollectorMetrics();
  const logger = recordingLogger();
  const relay = await startStandaloneCollector(
    loadConfig(relayEnv(relayDir)),
    { apiUrl: api.url, logger, metrics },
  );
  t.after(() => relay.close());

  const now = Math.floor(Date.now() / 1000) - 600;
  const records = Array.from({ length: 20 }, (_, i) => ({ timestamp: now + i, battery_id: 'pack-r', pack_voltage: 400 + i, pack_current: -5, cell_temp: 25, ...(i === 7 ? { source: 'poison' } : {}) }));
  // One write: the spool hands the 20 records to the forwarder as one batch.
  await sendChunks(relay.collector.jsonPort, [Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n')]);
  const settled = async () => /collector_forwarded_records_total\{kind="battery-data"\} 19\n/.test(await metrics.registry.metrics());
  await eventually(settled, 'the 19 others forwarded');
  assert.equal(relay.spool.depth().records, 0, 'nothing left in the spool');

  const stored = (await (await fetch(`${api.url}/api/battery-data/history?hours=24&limit=100&battery_id=pack-r`)).json()) as { pack_voltage: number }[];
  assert.deepEqual(
    stored.map((r) => r.pack_voltage).sort((a, b) => a - b),
    records.filter((_, i) => i !== 7).map((r) => r.pack_voltage),
  );
  const metricsText = await metrics.registry.metrics();
  assert.match(metricsText, /collector_rejected_total\{listener="forwarder",reason="store_refused"\} 1\n/);
  assert.match(metricsText, /collector_forwarded_records_total\{kind="battery-data"\} 19\n/);
  assert.ok(logger.entries.some((e) => /refused records/.test(e.msg ?? '')));
});
