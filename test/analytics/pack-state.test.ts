/** The per-pack state on its own: pure functions, readings in, state and estimates out. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { healthOf } from '../../src/analytics/estimates.js';
import { advance, newPackAnalytics, splitTrapezoid, type PackAnalytics } from '../../src/analytics/pack-state.js';
import { defaultSpecs, effectiveSpecs, seriesCells } from '../../src/analytics/pack-specs.js';
import { loadSpecs } from '../../src/specs.js';
import { DEFAULT_SPECS_FILE } from '../../src/config.js';

const specs = { nominal_capacity_ah: 75, cell_count: 108, full_charge_voltage: 442.8, empty_voltage: 324, end_of_life_soh: 80 };
const settings = { maxGapSeconds: 60, taperC: 0.05 };

/** Feeds [seconds, volts, amps] readings from t0; answers how many segments were accepted. */
function feed(state: PackAnalytics, t0: number, rows: [number, number, number][]): number {
  let segments = 0;
  for (const [t, v, i] of rows) if (advance(state, { timestamp: t0 + t, pack_voltage: v, pack_current: i, cell_temp: 25 }, specs, settings, 0)) segments++;
  return segments;
}

/** Full at t0, then `amps` out every 30 s until `ah` are out, then empty. */
function discharge(t0: number, amps: number, ah: number): [number, number, number][] {
  const rows: [number, number, number][] = [[0, 445, 0]];
  const seconds = (ah / amps) * 3600;
  for (let t = 30; t < seconds; t += 30) rows.push([t, 400, -amps]);
  rows.push([seconds, 400, -amps], [seconds + 1, 320, -amps]);
  return rows.map(([t, v, i]) => [t + t0, v, i]);
}

test('the trapezoid splits where the current crosses zero', () => {
  assert.deepEqual(splitTrapezoid(10, 20, 2), [30, 0]);
  assert.deepEqual(splitTrapezoid(-10, -20, 2), [0, 30]);
  // 10 -> -30 over 4 s: zero at 1 s; 5 in, 45 out.
  assert.deepEqual(splitTrapezoid(10, -30, 4), [5, 45]);
  assert.deepEqual(splitTrapezoid(-30, 10, 4), [5, 45]);
});

test('a discharge from full to empty is a segment: its capacity is the charge counted; SoC counts from the anchor', () => {
  const state = newPackAnalytics('p');
  assert.equal(feed(state, 0, discharge(0, 30, 60)), 1);
  const health = healthOf(state, specs);
  // 60 Ah of flat 30 A plus the first 30 s ramp from 0 A (half of it) and the last second.
  const counted = 60 - (30 * 15) / 3600 + (30 * 1) / 3600;
  assert.ok(Math.abs(health.capacity_ah.value! - counted) < 1e-3, `${health.capacity_ah.value} vs ${counted}`);
  assert.equal(health.soh.segments, 1);
  assert.equal(health.soc.value, 0);
  assert.equal(health.rul_cycles.value, null);
  assert.match(health.rul_cycles.reason!, /fewer than 3/);
});

test('a gap between the anchors breaks the segment; a capacity out of bounds is refused', () => {
  const state = newPackAnalytics('p');
  const rows = discharge(0, 30, 60);
  rows.splice(50, 0, [rows[49]![0] + 10, 400, -30]);
  // Shift the rest by two minutes: a gap.
  const gapped = rows.map(([t, v, i], index) => [index > 50 ? t + 120 : t, v, i] as [number, number, number]);
  assert.equal(feed(state, 0, gapped), 0);
  assert.equal(state.gaps, 1);
  assert.equal(healthOf(state, specs).soc.value, 0, 'the empty anchor sets it again');
  const small = newPackAnalytics('q');
  assert.equal(feed(small, 0, discharge(0, 30, 10)), 0);
  assert.equal(small.rejected_segments, 1);
});

test('with a fade measured over segments: health from the fit, remaining life to the end-of-life level with an interval', () => {
  const state = newPackAnalytics('p');
  let t = 0;
  for (let cycle = 0; cycle < 20; cycle++) {
    const capacity = 75 * (1 - 0.005 * cycle);
    feed(state, t, discharge(0, 37.5, capacity));
    t += 40_000;
    // Recharged off the record: a gap, so that only discharges are segments.
  }
  const health = healthOf(state, specs);
  assert.equal(health.soh.segments, 20);
  assert.ok(health.soh.value! < 92 && health.soh.value! > 88, `${health.soh.value}`);
  assert.ok(health.rul_cycles.value! > 0);
  assert.ok(health.rul_cycles.low! <= health.rul_cycles.value! && health.rul_cycles.value! <= health.rul_cycles.high!);
  assert.ok(health.rul_hours.value! > 0);
});

test('specs: defaults from the shipped specs file; per-cell voltages follow a new cell count', () => {
  assert.equal(seriesCells('108s2p'), 108);
  assert.equal(seriesCells('bank'), undefined);
  const defaults = defaultSpecs(loadSpecs(DEFAULT_SPECS_FILE), 80);
  assert.deepEqual(defaults, specs);
  assert.deepEqual(effectiveSpecs(defaults, { cell_count: 16, end_of_life_soh: 70 }), {
    nominal_capacity_ah: 75,
    cell_count: 16,
    full_charge_voltage: 65.6,
    empty_voltage: 48,
    end_of_life_soh: 70,
  });
});
