/**
 * The evaluator on its own (src/alarms/evaluator.ts): series of readings, in record time, through
 * `assess`, the whole of a reading's evaluation, for each rule type: what raises, escalates, steps
 * down and clears, the hysteresis against a value hovering at a level, the debounce, the rate window.
 * cell_imbalance is tested here on values alone; test/api/cells-suite.ts raises and clears one from real records.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addToWindow, assess, SLICES, type AssessedRule, type Transition } from '../../src/alarms/evaluator.js';
import type { RateSlice, RuleState, Severity } from '../../src/alarms/model.js';
import { mulberry32 } from '../../src/simulator/pack-model.js';

type Row = Record<string, number>;

/** Runs rows through a rule, keeping the open severity as the engine does; answers each change as `t:type:severity`. */
function run(rule: AssessedRule, field: string, rows: readonly Row[]): string[] {
  const state: Pick<RuleState, 'pending_since' | 'window'> = { pending_since: null, window: null };
  let open: Severity | null = null;
  const changes: string[] = [];
  for (const row of rows) {
    const value = row[field];
    if (value === undefined) continue;
    const change: Transition | null = assess(rule, state, open, row.timestamp!, value);
    if (change === null) continue;
    open = change.type === 'cleared' ? null : change.severity;
    changes.push(`${row.timestamp}:${change.type}:${open ?? '-'}`);
  }
  return changes;
}

/** Rows one second apart from t = 0, one value each. */
const series = (field: string, values: readonly number[], step = 1): Row[] => values.map((value, i) => ({ timestamp: i * step, [field]: value }));

const threshold = (overrides: Partial<AssessedRule> = {}): AssessedRule => ({
  type: 'threshold',
  window_seconds: null,
  warning: { below: 0, above: 45 },
  critical: { below: -20, above: 60 },
  hysteresis: 0,
  debounce_seconds: 0,
  ...overrides,
});

describe('threshold rules', () => {
  it('raise outside the warning band, escalate past critical, step down and clear as the value comes back (two-sided band)', () => {
    const rule = threshold();
    assert.deepEqual(run(rule, 'cell_temp', series('cell_temp', [30, 46, 50, 61, 70, 55, 40])), [
      '1:raised:warning',
      '3:escalated:critical',
      '5:deescalated:warning',
      '6:cleared:-',
    ]);
    // The low side alike; a value past critical at once raises critical.
    assert.deepEqual(run(rule, 'cell_temp', series('cell_temp', [10, -25, -5, 5])), ['1:raised:critical', '2:deescalated:warning', '3:cleared:-']);
  });

  it('judge a floor: health below warning, then below critical', () => {
    const rule = threshold({ warning: { below: 80 }, critical: { below: 60 } });
    assert.deepEqual(run(rule, 'health_score', series('health_score', [92, 79.5, 70, 59, 58, 75, 85])), [
      '1:raised:warning',
      '3:escalated:critical',
      '5:deescalated:warning',
      '6:cleared:-',
    ]);
  });

  it('hold against a value oscillating at a level: no flapping with hysteresis, where it would flap without', () => {
    const hovering = series('cell_temp', [40, 45.5, 44.6, 45.4, 44.5, 45.3, 44.2, 45.1, 44.9, 43.9, 44.5, 45.2]);
    // Without hysteresis every crossing raises or clears.
    assert.equal(run(threshold(), 'cell_temp', hovering).length, 9);
    // With 1 °C: raised once, cleared once the value is back 1 °C past the level (43.9 < 44), raised again past 45.
    assert.deepEqual(run(threshold({ hysteresis: 1 }), 'cell_temp', hovering), ['1:raised:warning', '9:cleared:-', '11:raised:warning']);
    // At the critical level alike: hovering around 60 stays critical.
    const hot = series('cell_temp', [50, 61, 59.5, 60.5, 59.2, 60.1, 58.9, 50, 43]);
    assert.deepEqual(run(threshold({ hysteresis: 1 }), 'cell_temp', hot), ['0:raised:warning', '1:escalated:critical', '6:deescalated:warning', '8:cleared:-']);
  });

  it('debounce in record time: raise only once the condition has held that long, start over when it stops', () => {
    const rule = threshold({ debounce_seconds: 10 });
    const rows = (pairs: [number, number][]) => pairs.map(([timestamp, cell_temp]) => ({ timestamp, cell_temp }));
    assert.deepEqual(run(rule, 'cell_temp', rows([[0, 46], [5, 47], [9.9, 46]])), []);
    assert.deepEqual(run(rule, 'cell_temp', rows([[0, 46], [5, 47], [10, 46]])), ['10:raised:warning']);
    // A reading back inside the band in between starts the debounce over.
    assert.deepEqual(run(rule, 'cell_temp', rows([[0, 46], [5, 40], [10, 46], [19, 46], [20, 61]])), ['20:raised:critical']);
    // Escalation does not wait.
    assert.deepEqual(run(rule, 'cell_temp', rows([[0, 46], [10, 46], [11, 61]])), ['10:raised:warning', '11:escalated:critical']);
  });
});

describe('rate_of_rise rules', () => {
  const rule: AssessedRule = {
    type: 'rate_of_rise',
    window_seconds: 60,
    warning: { above: 2 },
    critical: { above: 5 },
    hysteresis: 0.5,
    debounce_seconds: 0,
  };

  it('raise on a rise faster than the warning rate per minute, escalate past critical, clear once it levels off', () => {
    const rows: Row[] = [];
    let temperature = 30;
    for (let t = 0; t < 300; t++) {
      // 1 °C/min for a minute and a half, 3 °C/min, 6 °C/min, then flat.
      temperature += t < 90 ? 1 / 60 : t < 150 ? 3 / 60 : t < 210 ? 6 / 60 : 0;
      rows.push({ timestamp: t, cell_temp: temperature });
    }
    const changes = run(rule, 'cell_temp', rows);
    assert.deepEqual(
      changes.map((change) => change.split(':').slice(1).join(':')),
      ['raised:warning', 'escalated:critical', 'deescalated:warning', 'cleared:-'],
    );
    const at = changes.map((change) => Number(change.split(':')[0]));
    // Within the window after each change of pace.
    assert.ok(at[0]! > 90 && at[0]! <= 150, changes.join());
    assert.ok(at[1]! > 150 && at[1]! <= 210, changes.join());
    assert.ok(at[3]! > 210 && at[3]! <= 280, changes.join());
  });

  it('do not read sensor noise as a rise', () => {
    const random = mulberry32(7);
    const rows = Array.from({ length: 600 }, (_, t) => ({ timestamp: t * 0.5, cell_temp: 35 + (random() - 0.5) * 2 }));
    assert.deepEqual(run(rule, 'cell_temp', rows), []);
  });

  it('keep a bounded window whatever the reading rate, and say nothing until it spans half its length', () => {
    const window: RateSlice[] = [];
    assert.equal(addToWindow(window, 60, 0, 20), undefined);
    assert.equal(addToWindow(window, 60, 29, 21), undefined);
    assert.ok(Math.abs(addToWindow(window, 60, 30, 21)! - 2) < 0.1);
    for (let i = 0; i < 100_000; i++) addToWindow(window, 60, 31 + i / 100, 21);
    assert.ok(window.length <= SLICES + 1, `${window.length} slices`);
    // Flat for the last 16 minutes: no rise.
    assert.equal(addToWindow(window, 60, 1031, 21), 0);
  });
});

describe('cell_imbalance rules', () => {
  it('judge max minus min cell voltage by field name, in rows that carry it, skipping rows that do not', () => {
    const rule: AssessedRule = {
      type: 'cell_imbalance',
      window_seconds: null,
      warning: { above: 0.05 },
      critical: { above: 0.1 },
      hysteresis: 0.01,
      debounce_seconds: 0,
    };
    const rows: Row[] = [
      { timestamp: 0, cell_voltage_delta: 0.02 },
      { timestamp: 1, pack_voltage: 400 },
      { timestamp: 2, cell_voltage_delta: 0.06 },
      { timestamp: 3, cell_voltage_delta: 0.045 },
      { timestamp: 4, cell_voltage_delta: 0.12 },
      { timestamp: 5, cell_voltage_delta: 0.095 },
      { timestamp: 6, cell_voltage_delta: 0.085 },
      { timestamp: 7, cell_voltage_delta: 0.045 },
      { timestamp: 8, cell_voltage_delta: 0.035 },
    ];
    assert.deepEqual(run(rule, 'cell_voltage_delta', rows), ['2:raised:warning', '4:escalated:critical', '6:deescalated:warning', '8:cleared:-']);
  });
});
