/**
 * Per-cell readings through the relay: the spool's lines carry a record's arrays (and nothing the
 * server derives: the API computes that again), across a restart of the spool, and the standalone
 * collector delivers them to the API, which stores them with the derived numbers. Real spool files,
 * real sockets, real SQLite.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { startStandaloneCollector } from '../../src/relay/collect.js';
import { recordLine, Spool } from '../../src/relay/spool.js';
import { allRecords, recordingLogger, sendChunks, eventually, within } from '../collector/helpers.js';
import { batchOf } from '../store/conformance.js';
import { startTestService } from '../support/service.js';
import { relayEnv } from '../support/relay-env.js';
import { tempDir } from '../support/temp-dir.js';

const VOLTAGES = [3.7000000000000006, 3.712, 3.1, 4.2, 1e-7];
const TEMPS = [25.5, -3.25];
const base = { timestamp: 1732700000.25, source: 'bms-1', battery_id: 'relay-cells', pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 };

test('a spooled line carries the arrays as sent, not the derived numbers; a record without cells is the line it always was', async () => {
  const dir = tempDir('spool-cells-');
  const spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  const batch = batchOf('battery-data', [{ ...base, cell_voltages: VOLTAGES, cell_temps: TEMPS }, base, { ...base, cell_voltages: [] }]);
  assert.equal(batch.value(0, 'cell_voltage_delta'), 4.2 - 1e-7, 'derived in the batch');
  assert.equal(recordLine(batch, 0), JSON.stringify({ ...base, cell_voltages: VOLTAGES, cell_temps: TEMPS }));
  assert.equal(recordLine(batch, 1), JSON.stringify(base));
  assert.equal(recordLine(batch, 2), JSON.stringify(base), 'an empty array is absent');
  await spool.submit(batch);
  await spool.close();

  // What a restarted relay sends: the lines read back from disk.
  const reopened = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  const spooled = (await reopened.nextBatch('battery-data'))!;
  assert.deepStrictEqual(JSON.parse(spooled.body.toString()), [{ ...base, cell_voltages: VOLTAGES, cell_temps: TEMPS }, base, base]);
  await reopened.ack(spooled);
  await reopened.close();
});

test('the standalone collector delivers readings with cells to the API, which stores what it derives', async (t) => {
  const api = await startTestService({ dataDir: tempDir('relay-cells-api-'), logLevel: 'warn' });
  const config = loadConfig(relayEnv(tempDir('relay-cells-'), { LOG_LEVEL: 'warn' }));
  const standalone = await startStandaloneCollector(config, { apiUrl: api.url, logger: recordingLogger() });
  t.after(async () => {
    await standalone.close();
    await api.close();
  });
  const now = Date.now() / 1000;
  const lines = [
    { ...base, timestamp: now - 2, cell_voltages: VOLTAGES, cell_temps: TEMPS, cell_voltage_max: 99 },
    { ...base, timestamp: now - 1 },
  ].map((record) => JSON.stringify(record));
  await sendChunks(standalone.collector.jsonPort, [Buffer.from(`${lines.join('\n')}\n`)]);
  await eventually(async () => (await allRecords(api.app.store, 'battery-data', 'relay-cells')).length === 2, 'both records delivered');
  await within(standalone.forwarder.idle(), 'the spool delivered');
  const [withCells, without] = await allRecords(api.app.store, 'battery-data', 'relay-cells');
  assert.deepStrictEqual(
    [withCells!.cell_voltages, withCells!.cell_temps, withCells!.cell_voltage_min, withCells!.cell_voltage_max, withCells!.cell_voltage_delta, withCells!.cell_temp_max],
    [VOLTAGES, TEMPS, 1e-7, 4.2, 4.2 - 1e-7, 25.5],
  );
  assert.deepStrictEqual(Object.keys(without!), ['_id', 'timestamp', 'received_at', 'source', 'battery_id', 'pack_voltage', 'pack_current', 'cell_temp']);
});
