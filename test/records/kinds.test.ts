/**
 * The kinds table and what is derived from it: schemas, JSON routing, the columnar layout, the CSV
 * columns. Each test names the table's own data, so a new field or kind is checked without a change here.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { derivedAt, measurementsAt, numericColumns, optionalColumns, STRING_COLUMNS } from '../../src/records/columns.js';
import {
  aggregatedFields,
  ALL_KINDS,
  arrayFields,
  COMMON_FIELDS,
  csvColumns,
  inputFields,
  kindOfMessage,
  KIND_NAMES,
  KINDS,
  MAX_ARRAY_ITEMS,
  recordFields,
} from '../../src/records/kinds.js';
import { inputSchemas, recordSchemas } from '../../src/records/schemas.js';
import { validateBody } from '../../src/records/validate.js';
import { recordLine } from '../../src/relay/spool.js';
import { batchOf } from '../store/conformance.js';
import { exampleInput } from './examples.js';

test('kinds.ts imports nothing, so a plain script can read the table (the web types are generated from it)', () => {
  const source = readFileSync(new URL('../../src/records/kinds.ts', import.meta.url), 'utf8');
  assert.doesNotMatch(source, /^\s*import\b/m);
});

test("each kind's own example record is valid input, and only a device clock kind takes device_time", () => {
  for (const kind of ALL_KINDS) {
    const input = exampleInput(kind.name);
    assert.deepEqual(validateBody(kind.name, input), { ok: true, records: [input], isArray: false }, kind.name);
    assert.equal('device_time' in input, kind.deviceTime, kind.name);
  }
});

test('the input schema names what a producer sends; only the kind\'s own fields are required', () => {
  for (const kind of ALL_KINDS) {
    const schema = inputSchemas[kind.name];
    assert.deepEqual(Object.keys(schema.properties), inputFields(kind.name).map((field) => field.name));
    assert.deepEqual(schema.required, Object.keys(kind.fields));
    for (const name of Object.keys(schema.properties)) {
      assert.equal(COMMON_FIELDS[name as keyof typeof COMMON_FIELDS]?.setBy ?? 'producer', 'producer', name);
    }
  }
});

test('the answer schema names every field in the table\'s order; only device_time, the arrays and what is derived from them may be missing', () => {
  for (const kind of ALL_KINDS) {
    const schema = recordSchemas[kind.name];
    assert.deepEqual(Object.keys(schema.properties), csvColumns(kind.name));
    const optional = Object.keys(schema.properties).filter((name) => !schema.required?.includes(name));
    assert.deepEqual(optional, [...(kind.deviceTime ? ['device_time'] : []), ...Object.keys(kind.arrays ?? {}), ...Object.keys(kind.derived ?? {})]);
  }
});

test('battery-data has per-cell arrays, optional, of finite numbers, at most 1,024; the derived numbers are no input', () => {
  const { properties, required } = inputSchemas['battery-data'] as unknown as { properties: Record<string, any>; required?: string[] };
  const answered = recordSchemas['battery-data'].properties as Record<string, any>;
  for (const name of ['cell_voltages', 'cell_temps']) {
    assert.equal(required?.includes(name), false, name);
    assert.equal(properties[name].type, 'array');
    assert.equal(properties[name].maxItems, MAX_ARRAY_ITEMS);
    assert.equal(properties[name].items.type, 'number');
  }
  for (const name of ['cell_voltage_min', 'cell_voltage_max', 'cell_voltage_delta', 'cell_temp_max']) {
    assert.equal(name in properties, false, `${name} is the server's`);
    assert.equal(answered[name].type, 'number');
  }
  assert.deepEqual(
    aggregatedFields('battery-data').map((field) => field.name),
    ['pack_voltage', 'pack_current', 'cell_temp', 'cell_voltage_min', 'cell_voltage_max', 'cell_voltage_delta', 'cell_temp_max'],
  );
  for (const kind of ['battery-performance', 'battery-prediction'] as const) assert.deepEqual(arrayFields(kind), []);
});

test('a JSON message goes to the kind whose routing field it carries, as the original collector routed it', () => {
  for (const kind of ALL_KINDS) {
    assert.ok(kind.routingField in kind.fields, `${kind.name} routes by a field of its own`);
    assert.equal(kindOfMessage(exampleInput(kind.name)), kind.name);
  }
  // capacity_remaining means performance, remaining_life_hours a prediction, pack_voltage alone battery data.
  assert.equal(kindOfMessage({ pack_voltage: 1, capacity_remaining: 2 }), 'battery-performance');
  assert.equal(kindOfMessage({ pack_voltage: 1, remaining_life_hours: 2 }), 'battery-prediction');
  assert.equal(kindOfMessage({ capacity_remaining: 1, remaining_life_hours: 2 }), 'battery-performance');
  assert.equal(kindOfMessage({ pack_voltage: 1 }), 'battery-data');
  assert.equal(kindOfMessage({ cell_temp: 1 }), undefined);
});

test('the dashboard answers each kind under the original service\'s key', () => {
  assert.deepEqual(
    KIND_NAMES.map((name) => KINDS[name].dashboardKey),
    ['battery_data', 'performance', 'prediction'],
  );
});

test('the columnar layout holds every stored field once: the strings, then numbers with the measurements and derived numbers last, arrays beside', () => {
  for (const kind of ALL_KINDS) {
    const numbers = numericColumns(kind.name);
    const stored = recordFields(kind.name).filter((field) => field.setBy !== 'store').map((field) => field.name);
    const arrays = arrayFields(kind.name).map((field) => field.name);
    assert.deepEqual([...STRING_COLUMNS, ...numbers, ...arrays].sort(), [...stored].sort(), kind.name);
    assert.deepEqual(numbers.slice(measurementsAt(kind.name)), [...Object.keys(kind.fields), ...Object.keys(kind.derived ?? {})]);
    assert.deepEqual(numbers.slice(derivedAt(kind.name)), Object.keys(kind.derived ?? {}));
    assert.deepEqual([...optionalColumns(kind.name)], [...(kind.deviceTime ? ['device_time'] : []), ...Object.keys(kind.derived ?? {})]);
  }
  assert.deepEqual([...STRING_COLUMNS].sort(), ['battery_id', 'source']);
});

test("a spooled line of every kind is the record as a producer sends it, fields in the input schema's order", () => {
  for (const kind of ALL_KINDS) {
    const input = exampleInput(kind.name);
    const line = recordLine(batchOf(kind.name, [input]), 0);
    assert.equal(line, JSON.stringify(input));
    assert.deepEqual(Object.keys(JSON.parse(line)), Object.keys(inputSchemas[kind.name].properties));
  }
});
