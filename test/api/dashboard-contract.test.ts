/**
 * GET /api/dashboard as the original Battery Monitoring API answered it. The original React
 * frontend (its src/App.tsx polls this endpoint) reads `battery_data`, `performance`,
 * `prediction`, `specs` and `thresholds`; answering under other names made it say "No
 * performance data available" while the data existed. This pins the key set and each value's
 * shape, against the app on a real SQLite file.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp, call } from '../support/helper.js';

/** The original's keys, exactly. */
const ORIGINAL_KEYS = ['battery_data', 'performance', 'prediction', 'specs', 'thresholds'];
/** Keys this service may add beside them; a frontend for the original ignores them. */
const ALLOWED_EXTRAS = new Set(['timestamp']);

const COMMON = { _id: 'string', timestamp: 'number', received_at: 'number', source: 'string', battery_id: 'string' };
const SHAPES: Record<string, Record<string, string>> = {
  battery_data: { ...COMMON, pack_voltage: 'number', pack_current: 'number', cell_temp: 'number' },
  performance: {
    ...COMMON,
    pack_voltage: 'number',
    pack_current: 'number',
    cell_temp: 'number',
    capacity_remaining: 'number',
    cycle_count: 'number',
    age_months: 'number',
    health_score: 'number',
  },
  prediction: { ...COMMON, remaining_life_hours: 'number', remaining_cycles: 'number', degradation_rate: 'number' },
  specs: {
    nominal_capacity_ah: 'number',
    nominal_voltage: 'number',
    max_cycles: 'number',
    max_temp: 'number',
    min_temp: 'number',
    max_current: 'number',
    chemistry: 'string',
    cell_configuration: 'string',
    rated_power: 'number',
  },
};
const BAND = { min: 'number', max: 'number', critical_low: 'number', critical_high: 'number' };
const THRESHOLDS: Record<string, Record<string, string>> = {
  voltage: BAND,
  current: BAND,
  temperature: BAND,
  health: { min: 'number', warning: 'number', critical: 'number' },
};

/** Every named field is there with its JSON type; nothing else is (device_time aside, optional). */
function assertShape(value: unknown, shape: Record<string, string>, where: string, optional: string[] = []): void {
  assert.equal(typeof value, 'object', `${where} is an object`);
  assert.notEqual(value, null, `${where} is not null`);
  const object = value as Record<string, unknown>;
  for (const [field, type] of Object.entries(shape)) assert.equal(typeof object[field], type, `${where}.${field} is a ${type}`);
  const unknown = Object.keys(object).filter((field) => !(field in shape) && !optional.includes(field));
  assert.deepEqual(unknown, [], `${where} has no fields beyond the contract`);
}

function assertKeys(body: Record<string, unknown>): void {
  const keys = Object.keys(body).filter((key) => !ALLOWED_EXTRAS.has(key)).sort();
  assert.deepEqual(keys, ORIGINAL_KEYS, 'exactly the original keys (timestamp aside)');
}

function assertSpecsAndThresholds(body: Record<string, unknown>): void {
  assertShape(body.specs, SHAPES.specs!, 'specs');
  assert.deepEqual(Object.keys(body.thresholds as object).sort(), Object.keys(THRESHOLDS).sort());
  for (const [name, shape] of Object.entries(THRESHOLDS)) {
    assertShape((body.thresholds as Record<string, unknown>)[name], shape, `thresholds.${name}`);
  }
}

describe('GET /api/dashboard keeps the original contract', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
  });
  after(() => app.close());

  it('answers the original keys with null records while nothing is stored', async () => {
    const { status, body } = await call(app, '/api/dashboard');
    assert.equal(status, 200);
    assertKeys(body);
    assert.equal(body.battery_data, null);
    assert.equal(body.performance, null);
    assert.equal(body.prediction, null);
    assertSpecsAndThresholds(body);
  });

  it('answers the latest record of each kind under the original keys, fleet-wide and per pack', async () => {
    const now = Date.now() / 1000;
    const post = async (kind: string, record: Record<string, unknown>) =>
      assert.equal((await call(app, `/api/${kind}`, { body: record })).status, 200);
    await post('battery-data', { battery_id: 'pack-a', timestamp: now - 10, pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 });
    await post('battery-data', { battery_id: 'pack-a', timestamp: now - 5, pack_voltage: 399.0, pack_current: -10, cell_temp: 31.5 });
    await post('battery-performance', {
      battery_id: 'pack-a',
      timestamp: now - 5,
      pack_voltage: 398,
      pack_current: -12,
      cell_temp: 30,
      capacity_remaining: 88.1,
      cycle_count: 412,
      age_months: 18,
      health_score: 92.4,
    });
    await post('battery-prediction', { battery_id: 'pack-a', timestamp: now - 5, remaining_life_hours: 15_200, remaining_cycles: 1210, degradation_rate: 0.021 });
    await post('battery-data', { battery_id: 'pack-b', timestamp: now - 1, pack_voltage: 402.6, pack_current: 8.4, cell_temp: 27.9 });

    const fleet = (await call(app, '/api/dashboard')).body;
    assertKeys(fleet);
    assertShape(fleet.battery_data, SHAPES.battery_data!, 'battery_data', ['device_time']);
    assertShape(fleet.performance, SHAPES.performance!, 'performance');
    assertShape(fleet.prediction, SHAPES.prediction!, 'prediction');
    assertSpecsAndThresholds(fleet);
    assert.equal(fleet.battery_data.battery_id, 'pack-b', 'the newest reading of any pack');
    // What the original frontend reads from it.
    assert.equal(fleet.performance.health_score, 92.4);
    assert.equal(fleet.performance.capacity_remaining, 88.1);
    assert.equal(fleet.performance.cycle_count, 412);
    assert.equal(fleet.prediction.remaining_life_hours, 15_200);
    assert.equal(fleet.prediction.remaining_cycles, 1210);
    assert.equal(fleet.prediction.degradation_rate, 0.021);

    const packA = (await call(app, '/api/dashboard?battery_id=pack-a')).body;
    assertKeys(packA);
    assert.equal(packA.battery_data.pack_voltage, 399.0);
    assert.equal(packA.performance.battery_id, 'pack-a');
    assert.equal(packA.prediction.battery_id, 'pack-a');

    const packB = (await call(app, '/api/dashboard?battery_id=pack-b')).body;
    assertKeys(packB);
    assert.equal(packB.battery_data.pack_voltage, 402.6);
    assert.equal(packB.performance, null);
    assert.equal(packB.prediction, null);
  });

  it('documents the same keys in the OpenAPI document', async () => {
    const document = (await call(app, '/openapi.json')).body;
    const schema = document.paths['/api/dashboard'].get.responses['200'].content['application/json'].schema;
    const keys = Object.keys(schema.properties).filter((key: string) => !ALLOWED_EXTRAS.has(key)).sort();
    assert.deepEqual(keys, ORIGINAL_KEYS);
    assert.deepEqual([...schema.required].filter((key: string) => !ALLOWED_EXTRAS.has(key)).sort(), ORIGINAL_KEYS);
  });
});
