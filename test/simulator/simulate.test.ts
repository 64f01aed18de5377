import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { parseBatteryMap } from '../../src/collector/battery-map.js';
import { CellModel, CELLS_PER_MODULE, MIDDLE_WARMTH_C, NOISE_V, SPREAD_V, type CellReadings } from '../../src/simulator/cell-model.js';
import { PackModel, SCENARIOS, type Reading } from '../../src/simulator/pack-model.js';
import { planPacks, startSimulation } from '../../src/simulator/simulate.js';
import { allRecords, settle, startTestCollector } from '../collector/helpers.js';

const f32 = (x: number) => Math.fround(x);

test('scenarios behave like their names', () => {
  const run = (scenario: (typeof SCENARIOS)[number]) => {
    const model = new PackModel(scenario, 5);
    return Array.from({ length: 900 }, () => model.next(1));
  };
  const within = (rows: Reading[], key: keyof Reading, min: number, max: number) => rows.every((r) => r[key] >= min && r[key] <= max);
  const normal = run('normal');
  assert.ok(within(normal, 'pack_voltage', 330, 440) && within(normal, 'cell_temp', 0, 45));
  assert.ok(run('charging').slice(10).every((r) => r.pack_current > 0));
  assert.ok(run('discharging').slice(10).every((r) => r.pack_current < 0));
  const hot = run('overheating');
  assert.ok(hot.at(-1)!.cell_temp > 60 && hot[0]!.cell_temp < 45, 'overheating crosses the limits');
  const anomaly = run('voltage_anomaly');
  assert.ok(anomaly.some((r) => r.pack_voltage > 454) || anomaly.some((r) => r.pack_voltage < 300), 'anomalies pass the critical thresholds');
  assert.ok(anomaly.filter((r) => r.pack_voltage >= 330 && r.pack_voltage <= 440).length > anomaly.length / 2);
  const perf = new PackModel('normal', 1).performance(normal[0]!);
  assert.ok(Number.isInteger(perf.cycle_count) && perf.health_score > 60 && perf.health_score <= 100);
});

test('planPacks: one pack sends frames; several send JSON unless each has a port rule', () => {
  assert.deepStrictEqual(planPacks({ packs: 1, binaryPort: 23456 }), [{ batteryId: 'default', via: 'binary', framePort: 23456 }]);
  assert.deepStrictEqual(planPacks({ packs: 1, binaryPort: 23456, batteryMap: parseBatteryMap('port:23456=edge-a') }), [
    { batteryId: 'edge-a', via: 'binary', framePort: 23456 },
  ]);
  assert.deepStrictEqual(planPacks({ packs: 2, binaryPort: 23456 }).map((p) => [p.batteryId, p.via]), [['pack-1', 'json'], ['pack-2', 'json']]);
  const map = parseBatteryMap('port:23460=pack-1,port:23461=pack-2');
  assert.deepStrictEqual(planPacks({ packs: 2, binaryPort: 23456, batteryMap: map }), [
    { batteryId: 'pack-1', via: 'binary', framePort: 23460 },
    { batteryId: 'pack-2', via: 'binary', framePort: 23461 },
  ]);
  assert.deepStrictEqual(planPacks({ packs: 2, binaryPort: 23456, batteryMap: map, frames: 'json' }).map((p) => p.via), ['json', 'json']);
});

test("one pack's frames show up in the store with the values it sent", async (t) => {
  const tc = await startTestCollector(t);
  const sent: Reading[] = [];
  const sim = await startSimulation({
    host: '127.0.0.1', binaryPort: tc.collector.binaryPort, jsonPort: tc.collector.jsonPort,
    scenario: 'charging', packs: 1, rate: 2000, count: 60, onReading: (_id, via, reading) => { assert.equal(via, 'binary'); sent.push(reading); },
  });
  const stats = await sim.done;
  assert.deepStrictEqual(stats, { readings: 60, frames: 60, messages: 8, skipped: 0 });
  await settle(tc);
  const stored = (await allRecords(tc.store, 'battery-data')).sort((a, b) => (a.device_time as number) - (b.device_time as number));
  assert.equal(stored.length, 60);
  stored.forEach((record, i) => {
    assert.equal(record.device_time, f32(sent[i]!.device_time));
    assert.equal(record.pack_voltage, f32(sent[i]!.pack_voltage));
    assert.equal(record.pack_current, f32(sent[i]!.pack_current));
    assert.equal(record.cell_temp, f32(sent[i]!.cell_temp));
    assert.equal(record.battery_id, 'default');
  });
  const perf = await allRecords(tc.store, 'battery-performance');
  assert.equal(perf.length, 6);
  assert.ok(perf.every((r) => r.battery_id === 'default' && (r.pack_current as number) > 0));
  assert.equal((await allRecords(tc.store, 'battery-prediction')).length, 2);
});

test('several packs show up apart: JSON with battery_id, or frames on mapped ports', async (t) => {
  const tc = await startTestCollector(t);
  const sim = await startSimulation({ host: '127.0.0.1', binaryPort: tc.collector.binaryPort, jsonPort: tc.collector.jsonPort, scenario: 'normal', packs: 3, rate: 3000, count: 30 });
  await sim.done;
  await settle(tc);
  for (const id of ['pack-1', 'pack-2', 'pack-3']) {
    assert.equal((await allRecords(tc.store, 'battery-data', id)).length, 30, id);
    assert.equal((await allRecords(tc.store, 'battery-performance', id)).length, 3, id);
    assert.equal((await allRecords(tc.store, 'battery-prediction', id)).length, 1, id);
  }

  const ports = await Promise.all([0, 1].map(async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }));
  const batteryMap = parseBatteryMap(`port:${ports[0]}=pack-1,port:${ports[1]}=pack-2`);
  const mapped = await startTestCollector(t, { batteryMap });
  const sim2 = await startSimulation({ host: '127.0.0.1', binaryPort: mapped.collector.binaryPort, jsonPort: mapped.collector.jsonPort, scenario: 'discharging', packs: 2, rate: 3000, count: 20, batteryMap });
  assert.deepStrictEqual(sim2.plan.map((p) => p.via), ['binary', 'binary']);
  await sim2.done;
  await settle(mapped);
  for (const id of ['pack-1', 'pack-2']) {
    const records = await allRecords(mapped.store, 'battery-data', id);
    assert.equal(records.length, 20, id);
    assert.ok(records.every((r) => r.device_time !== undefined && (r.pack_current as number) < 0));
  }
});

test('the cell model: a small spread around the pack voltage shared out, one weak cell when asked, warmer middle modules', () => {
  const pack = new PackModel('discharging', 3);
  const even = new CellModel({ count: 96, seed: 3 });
  const weak = new CellModel({ count: 96, outlierMv: 50, seed: 3 });
  assert.equal(even.outlier, -1);
  assert.ok(weak.outlier >= 0 && weak.outlier < 96);
  for (let i = 0; i < 200; i++) {
    const reading = pack.next(1);
    const cells = even.readings(reading);
    assert.equal(cells.cell_voltages.length, 96);
    assert.equal(cells.cell_temps.length, Math.ceil(96 / CELLS_PER_MODULE));
    const spread = Math.max(...cells.cell_voltages) - Math.min(...cells.cell_voltages);
    // Each voltage is rounded to the millivolt.
    assert.ok(spread <= 2 * (SPREAD_V + NOISE_V) + 0.001 + 1e-9, `spread ${spread}`);
    const mean = cells.cell_voltages.reduce((a, b) => a + b, 0) / 96;
    assert.ok(Math.abs(mean - reading.pack_voltage / 96) < 0.002, `mean ${mean} vs ${reading.pack_voltage / 96}`);
    // Noise of ±0.1 °C, rounded to 0.1 °C.
    assert.ok(cells.cell_temps.every((t) => t >= reading.cell_temp - 0.15 && t <= reading.cell_temp + MIDDLE_WARMTH_C + 0.15), `${cells.cell_temps} vs ${reading.cell_temp}`);
    const withWeak = weak.readings(reading).cell_voltages;
    const lowest = withWeak.indexOf(Math.min(...withWeak));
    assert.equal(lowest, weak.outlier, 'the weak cell is the lowest');
    const delta = Math.max(...withWeak) - Math.min(...withWeak);
    assert.ok(delta >= 0.05 - 2 * (SPREAD_V + NOISE_V) && delta <= 0.05 * (1 + 2) + 2 * (SPREAD_V + NOISE_V), `delta ${delta}`);
  }
  assert.throws(() => new CellModel({ count: 1025 }), RangeError);
});

test('with cells, readings travel as JSON and are stored with their cells and what the server derives', async (t) => {
  const tc = await startTestCollector(t);
  assert.deepStrictEqual(planPacks({ packs: 1, binaryPort: 23456, cells: 96, frames: 'binary' }), [{ batteryId: 'pack-1', via: 'json' }]);
  const sent: { batteryId: string; cells: CellReadings }[] = [];
  const sim = await startSimulation({
    host: '127.0.0.1', binaryPort: tc.collector.binaryPort, jsonPort: tc.collector.jsonPort,
    scenario: 'discharging', packs: 2, rate: 2000, count: 25, cells: 96, cellOutlierMv: 40,
    onReading: (batteryId, via, _reading, cells) => { assert.equal(via, 'json'); sent.push({ batteryId, cells: cells! }); },
  });
  assert.equal((await sim.done).frames, 0);
  await settle(tc);
  for (const id of ['pack-1', 'pack-2']) {
    const stored = await allRecords(tc.store, 'battery-data', id);
    const mine = sent.filter((s) => s.batteryId === id).map((s) => s.cells);
    assert.equal(stored.length, 25, id);
    // Stored oldest first by timestamp; a tick's readings share one: compare as sets of arrays.
    const key = (voltages: unknown) => JSON.stringify(voltages);
    assert.deepStrictEqual(new Set(stored.map((r) => key(r.cell_voltages))), new Set(mine.map((c) => key(c.cell_voltages))));
    for (const record of stored) {
      const voltages = record.cell_voltages as number[];
      assert.equal(voltages.length, 96);
      assert.equal(record.cell_voltage_delta, Math.max(...voltages) - Math.min(...voltages));
      assert.ok((record.cell_voltage_delta as number) > 0.03, 'the weak cell shows');
      assert.equal(record.cell_temp_max, Math.max(...(record.cell_temps as number[])));
    }
  }
});
