/** The cycling scenario: a pack ageing with a known truth, in simulated time, sent over a real socket. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSimulateCommand } from '../../src/cli/simulate.js';
import { CyclingPack, type CyclingReading } from '../../src/simulator/cycling-model.js';
import { simulateCycling } from '../../src/simulator/cycling.js';
import { allRecords, settle, startTestCollector } from '../collector/helpers.js';

test('a cycle runs full to empty and back; cut-offs are reported at the full and empty levels; the capacity fades with cycles, faster when warm', () => {
  const pack = new CyclingPack({ seed: 2, fadePer100Cycles: 10, currentOffsetA: 0, currentNoiseA: 0, voltageNoiseV: 0 });
  const readings: CyclingReading[] = [];
  while (pack.truth().cycles < 3) readings.push(pack.next());
  assert.ok(readings.some((r) => r.pack_voltage <= pack.emptyVoltage && r.pack_current < 0), 'an empty cut-off reading');
  assert.ok(readings.some((r) => r.pack_voltage >= 108 * 4.1 && Math.abs(r.pack_current) < 0.05 * 75), 'a full reading with the current tapered');
  assert.ok(readings.every((r, i) => i === 0 || r.time > readings[i - 1]!.time));
  assert.ok(readings.every((r, i) => i === 0 || r.time - readings[i - 1]!.time <= 30), 'at most the interval apart');
  const truth = pack.truth();
  // About 0.1 % of health per equivalent cycle, a little more at the pack's temperature under load.
  const lost = 100 - truth.soh;
  assert.ok(lost > 0.1 * truth.equivalent_cycles && lost < 0.13 * truth.equivalent_cycles, `${lost} after ${truth.equivalent_cycles} cycles`);
  const warm = new CyclingPack({ seed: 2, fadePer100Cycles: 10, ambientC: 35 });
  while (warm.truth().cycles < 3) warm.next();
  assert.ok(100 - warm.truth().soh > 1.3 * lost, 'faster when warmer');
  assert.ok(Math.abs(truth.remainingCycles(80) - (truth.soh - 80) / (lost / truth.equivalent_cycles)) / truth.remainingCycles(80) < 0.1);
});

test('deterministic for a seed; the readings end now, in order', () => {
  const endAt = 1_800_000_000;
  const [a] = simulateCycling({ batteryIds: ['x'], cycles: 2, seed: 4, endAt });
  const [b] = simulateCycling({ batteryIds: ['x'], cycles: 2, seed: 4, endAt });
  assert.deepEqual(a!.messages, b!.messages);
  assert.equal(a!.messages.at(-1)!.timestamp, endAt);
  assert.ok(a!.messages[0]!.timestamp < endAt - 4 * 3600, 'hours of simulated time');
});

test('simulate --scenario cycling sends every reading, with its simulated timestamp, to the JSON port', async (t) => {
  const tc = await startTestCollector(t);
  const lines: string[] = [];
  t.mock.method(console, 'log', (line: string) => lines.push(line));
  await runSimulateCommand(['--scenario', 'cycling', '--cycles', '2', '--fade', '3', '--json-port', String(tc.collector.jsonPort), '--host', '127.0.0.1'], {});
  t.mock.restoreAll();
  assert.equal(process.exitCode ?? 0, 0, lines.join('\n'));
  const [expected] = simulateCycling({ batteryIds: ['pack-1'], cycles: 2, fadePer100Cycles: 3, endAt: 0 });
  await settle(tc);
  const stored = (await allRecords(tc.store, 'battery-data')).sort((x, y) => x.timestamp - y.timestamp);
  assert.equal(stored.length, expected!.messages.length);
  assert.ok(stored.every((record) => record.battery_id === 'pack-1'));
  assert.ok(stored.at(-1)!.timestamp - stored[0]!.timestamp > 4 * 3600);
  assert.match(lines.at(-1)!, /pack-1 truth: soh 99\.\d+ %/);
});
