/**
 * The alarm system through the service, written once and run against each store (alarms-sqlite.test.ts,
 * alarms-mongodb.test.ts): readings posted over HTTP (`inject`) or sent as binary frames over real TCP,
 * alarms read back through /api/alarms. Record time is what rules judge: every reading carries its
 * timestamp, so debounce and rate windows are exact. Each test watches packs of its own.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import { DEFAULT_SPECS_FILE, type Config } from '../../src/config.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { openStore } from '../../src/store/open-store.js';
import { buildApp, call, testConfig } from '../support/helper.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';

/** Settings of a store: `fresh` gives a new, empty one each call (a data directory, a database). */
export interface StoreSettings {
  fresh(): Partial<Config>;
}

/** Two hours ago, whole seconds: readings stamped from here on are plausible and in order. */
const BASE = Math.floor(Date.now() / 1000) - 7200;

type Reading = { timestamp: number; battery_id: string; pack_voltage?: number; pack_current?: number; cell_temp?: number };

const reading = (timestamp: number, battery_id: string, fields: Partial<Reading> = {}): Reading => ({
  timestamp,
  battery_id,
  pack_voltage: 400,
  pack_current: -10,
  cell_temp: 25,
  ...fields,
});

async function post(app: FastifyInstance, records: Reading | Reading[]): Promise<void> {
  const answer = await call(app, '/api/battery-data', { body: records });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  await evaluated(app);
}

/**
 * Waits until what the app stored has been evaluated: a read of alarms does (bounded). On MongoDB the
 * records reach evaluation through the store (the cluster feed), a poll after the write; the metrics
 * read next do not wait by themselves.
 */
async function evaluated(app: FastifyInstance): Promise<void> {
  await alarmsOf(app, 'state=all&limit=1');
}

/** Voltage readings of a pack: [seconds after t0, volts]. */
const volts = (batteryId: string, t0: number, pairs: [number, number][]) => pairs.map(([dt, v]) => reading(t0 + dt, batteryId, { pack_voltage: v }));

async function alarmsOf(app: FastifyInstance | string, query: string): Promise<any[]> {
  const answer = await call(app, `/api/alarms?${query}`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.alarms;
}

async function alarmOf(app: FastifyInstance, id: string): Promise<any> {
  const answer = await call(app, `/api/alarms/${encodeURIComponent(id)}`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

async function createRule(app: FastifyInstance | string, body: object): Promise<any> {
  const answer = await call(app, '/api/alarm-rules', { body });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body;
}

/** A voltage rule for one pack, inside the default voltage band (330..440) so that only it fires. */
const voltageRule = (batteryId: string, extra: object = {}) => ({
  name: `voltage of ${batteryId}`,
  type: 'threshold',
  kind: 'battery-data',
  field: 'pack_voltage',
  warning: { above: 420 },
  critical: { above: 430 },
  battery_id: batteryId,
  ...extra,
});

async function metric(app: FastifyInstance, series: string): Promise<number> {
  const text = (await call(app, '/metrics')).body as string;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/** Polls until `check` holds; fails after `ms` (every wait in these tests is bounded). */
async function until<T>(check: () => Promise<T | undefined | false>, what: string, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const types = (alarm: { events: { type: string }[] }) => alarm.events.map((event) => event.type);

export function alarmSuite(name: string, settings: StoreSettings): void {
  describe(`alarms on ${name}`, () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildApp(settings.fresh());
    });
    after(() => app.close());

    it('threshold rule: raises, escalates, steps down and clears as readings move; each change an event; alarms_open exact', async () => {
      const rule = await createRule(app, voltageRule('th-1'));
      const critical = await metric(app, 'alarms_open{severity="critical"}');
      const warning = await metric(app, 'alarms_open{severity="warning"}');
      await post(app, volts('th-1', BASE, [[0, 400], [1, 425]]));
      const [raised] = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.equal(raised.state, 'active');
      assert.equal(raised.severity, 'warning');
      assert.equal(raised.raised_at, BASE + 1);
      assert.equal(raised.raised_value, 425);
      assert.equal(raised.battery_id, 'th-1');
      assert.equal(await metric(app, 'alarms_open{severity="warning"}'), warning + 1);

      await post(app, volts('th-1', BASE, [[2, 435]]));
      assert.equal(await metric(app, 'alarms_open{severity="warning"}'), warning);
      assert.equal(await metric(app, 'alarms_open{severity="critical"}'), critical + 1);
      await post(app, volts('th-1', BASE, [[3, 424], [4, 401]]));
      const alarm = await alarmOf(app, raised.id);
      assert.equal(alarm.state, 'cleared');
      assert.equal(alarm.peak_severity, 'critical');
      assert.equal(alarm.severity, 'warning');
      assert.equal(alarm.cleared_at, BASE + 4);
      assert.equal(alarm.cleared_value, 401);
      assert.equal(alarm.clear_reason, 'condition');
      assert.deepEqual(types(alarm), ['raised', 'escalated', 'deescalated', 'cleared']);
      assert.deepEqual(
        alarm.events.map((event: any) => [event.at - BASE, event.severity, event.previous_severity, event.value]),
        [
          [1, 'warning', null, 425],
          [2, 'critical', 'warning', 435],
          [3, 'warning', 'critical', 424],
          [4, 'warning', null, 401],
        ],
      );
      assert.equal(new Set(alarm.events.map((event: any) => event.id)).size, 4);
      assert.equal(await metric(app, 'alarms_open{severity="critical"}'), critical);
      assert.equal(await metric(app, 'alarms_open{severity="warning"}'), warning);
      assert.ok((await metric(app, 'alarm_events_total{type="escalated"}')) >= 1);
      // Raised again later: a second alarm, not the first reopened.
      await post(app, volts('th-1', BASE, [[5, 432]]));
      const again = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.deepEqual(
        again.map((a) => [a.state, a.severity]),
        [
          ['active', 'critical'],
          ['cleared', 'warning'],
        ],
      );
      assert.notEqual(again[0].id, raised.id);
    });

    it('hysteresis: a value oscillating at the level keeps one alarm open; it clears once back past the level by the margin', async () => {
      const rule = await createRule(app, voltageRule('hy-1', { hysteresis: 2 }));
      const hovering: [number, number][] = [[0, 400], [1, 420.5], [2, 419.5], [3, 420.4], [4, 419.2], [5, 420.1], [6, 418.5], [7, 420.3]];
      await post(app, volts('hy-1', BASE, hovering));
      const alarms = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.equal(alarms.length, 1);
      assert.deepEqual(types(await alarmOf(app, alarms[0].id)), ['raised']);
      await post(app, volts('hy-1', BASE, [[8, 417.9]]));
      assert.deepEqual(types(await alarmOf(app, alarms[0].id)), ['raised', 'cleared']);
      assert.equal((await alarmsOf(app, `rule_id=${rule.id}`)).length, 1);
    });

    it('debounce: raises only once the condition held that long in record time, at the reading that completes it', async () => {
      const rule = await createRule(app, voltageRule('db-1', { debounce_seconds: 10 }));
      await post(app, volts('db-1', BASE, [[0, 425], [5, 426]]));
      assert.deepEqual(await alarmsOf(app, `rule_id=${rule.id}`), []);
      // Interrupted: it starts over.
      await post(app, volts('db-1', BASE, [[7, 410], [12, 425], [21, 425]]));
      assert.deepEqual(await alarmsOf(app, `rule_id=${rule.id}`), []);
      await post(app, volts('db-1', BASE, [[22, 426]]));
      const [alarm] = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.equal(alarm.raised_at, BASE + 22);
      assert.equal(alarm.raised_value, 426);
    });

    it('rate of rise (the default temperature-rise rule): raises on a fast climb, escalates on a faster one, clears when it levels off', async () => {
      const readings: Reading[] = [];
      let temperature = 20;
      for (let t = 0; t < 300; t++) {
        // 3 °C/min for two minutes, 6 °C/min for one, then flat: never past the 45 °C threshold.
        temperature += t < 120 ? 3 / 60 : t < 180 ? 6 / 60 : 0;
        readings.push(reading(BASE + t, 'rr-1', { cell_temp: Math.round(temperature * 100) / 100 }));
      }
      await post(app, readings);
      const alarms = await alarmsOf(app, 'rule_id=temperature-rise&battery_id=rr-1');
      assert.equal(alarms.length, 1);
      const alarm = await alarmOf(app, alarms[0].id);
      assert.deepEqual(types(alarm), ['raised', 'escalated', 'deescalated', 'cleared']);
      assert.equal(alarm.peak_severity, 'critical');
      assert.ok(alarm.raised_value > 2 && alarm.raised_value < 4, `raised at ${alarm.raised_value} °C/min`);
      assert.ok(alarm.events[1].value > 5, `escalated at ${alarm.events[1].value} °C/min`);
      assert.deepEqual(await alarmsOf(app, 'rule_id=temperature&battery_id=rr-1'), []);
    });

    it('backfill: an older reading arriving late neither re-opens a cleared alarm nor clears an open one', async () => {
      const rule = await createRule(app, voltageRule('bf-1'));
      await post(app, volts('bf-1', BASE, [[100, 400], [101, 435], [102, 400]]));
      const [first] = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.equal(first.state, 'cleared');
      // Past critical, but older than what was evaluated: stored, not judged.
      await post(app, volts('bf-1', BASE, [[50, 440], [60, 441]]));
      assert.equal((await alarmsOf(app, `rule_id=${rule.id}`)).length, 1);
      assert.equal((await call(app, '/api/battery-data/history?battery_id=bf-1&hours=24&limit=10')).body.length, 5);
      await post(app, volts('bf-1', BASE, [[110, 436]]));
      // Normal, but older than the reading that raised it: the alarm stays open.
      await post(app, volts('bf-1', BASE, [[105, 400]]));
      const alarms = await alarmsOf(app, `rule_id=${rule.id}`);
      assert.deepEqual(
        alarms.map((a) => a.state),
        ['active', 'cleared'],
      );
      assert.deepEqual(types(await alarmOf(app, alarms[0].id)), ['raised']);
    });

    it('acknowledge: by and note kept, open until it clears, active again when it escalates; refused when cleared or twice', async () => {
      const rule = await createRule(app, voltageRule('ack-1'));
      await post(app, volts('ack-1', BASE, [[0, 425]]));
      const [alarm] = await alarmsOf(app, `rule_id=${rule.id}`);
      const path = `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`;
      const acked = await call(app, path, { body: { by: 'ann', note: 'checking the charger' } });
      assert.equal(acked.status, 200, JSON.stringify(acked.body));
      assert.equal(acked.body.state, 'acknowledged');
      assert.equal(acked.body.acknowledged_by, 'ann');
      assert.equal(acked.body.acknowledged_note, 'checking the charger');
      assert.equal(typeof acked.body.acknowledged_at, 'number');
      assert.deepEqual(types(acked.body), ['raised', 'acknowledged']);
      assert.deepEqual([acked.body.events[1].by, acked.body.events[1].note], ['ann', 'checking the charger']);
      assert.equal((await alarmsOf(app, `rule_id=${rule.id}&state=acknowledged`)).length, 1);
      assert.equal((await alarmsOf(app, `rule_id=${rule.id}&state=open`)).length, 1);

      const twice = await call(app, path, { body: { by: 'bob' } });
      assert.equal(twice.status, 409);
      assert.match(twice.body.detail, /ann/);
      // Still past warning: stays acknowledged. Past critical: active again.
      await post(app, volts('ack-1', BASE, [[1, 426]]));
      assert.equal((await alarmOf(app, alarm.id)).state, 'acknowledged');
      await post(app, volts('ack-1', BASE, [[2, 435]]));
      assert.equal((await alarmOf(app, alarm.id)).state, 'active');
      assert.equal((await call(app, path, { body: { by: 'bob' } })).status, 200);
      await post(app, volts('ack-1', BASE, [[3, 400]]));
      const done = await alarmOf(app, alarm.id);
      assert.equal(done.state, 'cleared');
      assert.deepEqual(types(done), ['raised', 'acknowledged', 'escalated', 'acknowledged', 'cleared']);
      const late = await call(app, path, { body: { by: 'carl' } });
      assert.equal(late.status, 409);
      assert.match(late.body.detail, /cleared/);

      assert.equal((await call(app, '/api/alarms/nope~x~1/acknowledge', { body: { by: 'ann' } })).status, 404);
      assert.equal((await call(app, '/api/alarms/nope~x~1')).status, 404);
      const invalid = await call(app, path, { body: { note: 'no name', extra: 1 } });
      assert.equal(invalid.status, 422);
      assert.deepEqual(invalid.body.detail.map((entry: any) => entry.loc.join('.')).sort(), ['body.by', 'body.extra']);
    });

    it('filters alarms by state, pack, severity, rule and since, newest raised first, limited', async () => {
      const rule = await createRule(app, voltageRule('fl-1', { battery_id: null, name: 'fleet voltage' }));
      await post(app, volts('fl-1', BASE, [[0, 425], [1, 400]]));
      await post(app, volts('fl-2', BASE, [[2, 435]]));
      await post(app, volts('fl-3', BASE, [[3, 425]]));
      const ids = async (query: string) => (await alarmsOf(app, `rule_id=${rule.id}&${query}`)).map((a) => a.battery_id);
      assert.deepEqual(await ids(''), ['fl-3', 'fl-2', 'fl-1']);
      assert.deepEqual(await ids('state=open'), ['fl-3', 'fl-2']);
      assert.deepEqual(await ids('state=cleared'), ['fl-1']);
      assert.deepEqual(await ids('state=active&severity=critical'), ['fl-2']);
      assert.deepEqual(await ids('battery_id=fl-1'), ['fl-1']);
      assert.deepEqual(await ids(`since=${BASE + 1.5}`), ['fl-3', 'fl-2']);
      assert.deepEqual(await ids(`since=${BASE + 1}`), ['fl-3', 'fl-2', 'fl-1']);
      assert.deepEqual(await ids('limit=1'), ['fl-3']);
      for (const [query, loc] of [
        ['state=closed', 'query.state'],
        ['severity=minor', 'query.severity'],
        ['limit=0', 'query.limit'],
        ['battery_id=no%20spaces', 'query.battery_id'],
        ['colour=red', 'query.colour'],
      ]) {
        const answer = await call(app, `/api/alarms?${query}`);
        assert.equal(answer.status, 422, query);
        assert.ok(answer.body.detail.some((entry: any) => entry.loc.join('.') === loc), `${query}: ${JSON.stringify(answer.body)}`);
      }
    });

    it('rules API: 422 naming the field, 404 for unknown ids, a rule read can be sent back, edits clear or keep alarms as documented', async () => {
      for (const [body, loc] of [
        [{ name: 'x', type: 'threshold', kind: 'battery-data', field: 'volts', warning: { above: 1 } }, 'body.field'],
        [{ name: 'x', type: 'threshold', kind: 'battery-data', field: 'cell_temp' }, 'body.warning'],
        [{ name: 'x', type: 'sometimes', warning: { above: 1 } }, 'body.type'],
        [{ name: 'x', type: 'threshold', kind: 'battery-stuff', field: 'cell_temp', warning: { above: 1 } }, 'body.kind'],
        [{ name: '', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 1 } }, 'body.name'],
        [{ name: 'x', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 1 }, hysteresis: -1 }, 'body.hysteresis'],
        [{ name: 'x', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 1 }, debounce: 5 }, 'body.debounce'],
        [{ name: 'x', type: 'rate_of_rise', kind: 'battery-data', field: 'cell_temp', warning: { below: 1 } }, 'body.warning.above'],
        [{ name: 'x', type: 'rate_of_rise', kind: 'battery-data', field: 'cell_temp', warning: { above: 1 }, window_seconds: 1 }, 'body.window_seconds'],
        [{ name: 'x', type: 'no_data', warning: { above: 60 }, debounce_seconds: 5 }, 'body.debounce_seconds'],
        [{ name: 'x', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 1 }, battery_id: 'a b' }, 'body.battery_id'],
        [{ name: 'x', type: 'cell_imbalance', field: 'Not-A-Field', warning: { above: 0.05 } }, 'body.field'],
      ] as const) {
        const answer = await call(app, '/api/alarm-rules', { body });
        assert.equal(answer.status, 422, JSON.stringify(body));
        assert.ok(
          answer.body.detail.some((entry: any) => entry.loc.join('.') === loc),
          `${JSON.stringify(body)} should name ${loc}: ${JSON.stringify(answer.body)}`,
        );
      }
      assert.equal((await call(app, '/api/alarm-rules', { body: [] })).status, 422);
      assert.equal((await call(app, '/api/alarm-rules/no-such-rule')).status, 404);
      assert.equal((await call(app, '/api/alarm-rules/no-such-rule', { method: 'PUT', body: voltageRule('x') })).status, 404);
      assert.equal((await call(app, '/api/alarm-rules/no-such-rule', { method: 'DELETE' })).status, 404);

      // Defaults filled in; a rule read back can be sent back unchanged.
      const imbalance = await createRule(app, { name: 'imbalance', type: 'cell_imbalance', warning: { above: 0.05 } });
      assert.deepEqual(
        [imbalance.kind, imbalance.field, imbalance.hysteresis, imbalance.battery_id, imbalance.enabled],
        ['battery-data', 'cell_voltage_delta', 0, null, true],
      );
      const read = (await call(app, `/api/alarm-rules/${imbalance.id}`)).body;
      const resent = await call(app, `/api/alarm-rules/${imbalance.id}`, { method: 'PUT', body: read });
      assert.equal(resent.status, 200, JSON.stringify(resent.body));
      assert.equal(resent.body.id, imbalance.id);

      // New levels: the open alarm stays, judged by them from the next reading.
      const rule = await createRule(app, voltageRule('ed-1'));
      await post(app, volts('ed-1', BASE, [[0, 425]]));
      const [open] = await alarmsOf(app, `rule_id=${rule.id}`);
      const relevelled = await call(app, `/api/alarm-rules/${rule.id}`, { method: 'PUT', body: voltageRule('ed-1', { warning: { above: 426 } }) });
      assert.equal(relevelled.status, 200);
      assert.equal((await alarmOf(app, open.id)).state, 'active');
      await post(app, volts('ed-1', BASE, [[1, 425]]));
      assert.equal((await alarmOf(app, open.id)).clear_reason, 'condition');
      // Another field: open alarms clear, reason rule_changed.
      await post(app, volts('ed-1', BASE, [[2, 431]]));
      const [second] = await alarmsOf(app, `rule_id=${rule.id}&state=open`);
      await call(app, `/api/alarm-rules/${rule.id}`, { method: 'PUT', body: { ...voltageRule('ed-1'), field: 'pack_current' } });
      const changed = await alarmOf(app, second.id);
      assert.deepEqual([changed.state, changed.clear_reason, changed.cleared_value], ['cleared', 'rule_changed', null]);
      // Disabled: rule_disabled. Deleted: rule_deleted, the history stays.
      await call(app, `/api/alarm-rules/${rule.id}`, { method: 'PUT', body: voltageRule('ed-1') });
      await post(app, volts('ed-1', BASE, [[3, 431]]));
      const [third] = await alarmsOf(app, `rule_id=${rule.id}&state=open`);
      await call(app, `/api/alarm-rules/${rule.id}`, { method: 'PUT', body: voltageRule('ed-1', { enabled: false }) });
      assert.equal((await alarmOf(app, third.id)).clear_reason, 'rule_disabled');
      await post(app, volts('ed-1', BASE, [[4, 440]]));
      assert.deepEqual(await alarmsOf(app, `rule_id=${rule.id}&state=open`), []);
      await call(app, `/api/alarm-rules/${rule.id}`, { method: 'PUT', body: voltageRule('ed-1') });
      await post(app, volts('ed-1', BASE, [[5, 431]]));
      const [fourth] = await alarmsOf(app, `rule_id=${rule.id}&state=open`);
      assert.equal((await call(app, `/api/alarm-rules/${rule.id}`, { method: 'DELETE' })).status, 204);
      assert.equal((await alarmOf(app, fourth.id)).clear_reason, 'rule_deleted');
      assert.equal((await call(app, `/api/alarm-rules/${rule.id}`)).status, 404);
      assert.equal((await alarmsOf(app, `rule_id=${rule.id}`)).length, 4);
    });

    it('records over the binary collector (real TCP) raise alarms and clear them', async () => {
      const service = await startTestService({ ...settings.fresh(), logLevel: 'silent' }, { collector: true });
      try {
        const socket = net.connect({ host: '127.0.0.1', port: service.collector!.binaryPort });
        await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
        const send = (cell_temp: number, device_time: number) =>
          new Promise((resolve) => socket.write(encodeFrame({ device_time, pack_voltage: 400, pack_current: -10, cell_temp }), resolve));
        await send(25, 1);
        await send(70, 2);
        const [alarm] = await until(async () => {
          const found = await alarmsOf(service.url, 'rule_id=temperature&battery_id=default');
          return found.length > 0 && found;
        }, 'a temperature alarm from frames');
        assert.equal(alarm.severity, 'critical');
        assert.equal(alarm.raised_value, 70);
        // Frames get the arrival time: the clearing one must come later.
        await new Promise((resolve) => setTimeout(resolve, 20));
        await send(30, 3);
        await until(async () => (await alarmsOf(service.url, 'rule_id=temperature&battery_id=default&state=cleared')).length === 1, 'the alarm cleared');
        socket.end();
      } finally {
        await service.close();
      }
    });

    it('no data: a silent pack raises by timer, escalates the longer it stays silent, and its next reading clears', async () => {
      const quiet = await buildApp({ ...settings.fresh(), noDataSeconds: 1 });
      try {
        const rule = await createRule(quiet, { name: 'quiet pack', type: 'no_data', warning: { above: 1 }, critical: { above: 2 }, battery_id: 'nd-1' });
        await post(quiet, reading(Math.floor(Date.now() / 1000), 'nd-1'));
        const defaultRule = (await call(quiet, '/api/alarm-rules/no-data')).body;
        assert.deepEqual([defaultRule.warning, defaultRule.critical], [{ above: 1 }, { above: 10 }]);
        const escalated = await until(async () => {
          const [alarm] = await alarmsOf(quiet, `rule_id=${rule.id}`);
          return alarm?.severity === 'critical' && alarm;
        }, 'the no-data alarm escalated');
        assert.ok(escalated.raised_value > 1, `raised after ${escalated.raised_value} s`);
        assert.equal((await alarmsOf(quiet, 'rule_id=no-data&battery_id=nd-1&state=open')).length, 1);
        await post(quiet, reading(Math.floor(Date.now() / 1000) + 1, 'nd-1'));
        const alarm = await alarmOf(quiet, escalated.id);
        assert.deepEqual(types(alarm), ['raised', 'escalated', 'cleared']);
        assert.ok(alarm.cleared_value >= 2, `a gap of ${alarm.cleared_value} s`);
        assert.deepEqual(await alarmsOf(quiet, 'battery_id=nd-1&state=open'), []);
      } finally {
        await quiet.close();
      }
    });

    it('restart in the middle of an open alarm: it stays open, counted once; a clearing reading clears it; nothing raised twice', async () => {
      const store = settings.fresh();
      const first = await buildApp(store);
      const rule = await createRule(first, voltageRule('rs-1'));
      await post(first, volts('rs-1', BASE, [[0, 400], [1, 435]]));
      const [open] = await alarmsOf(first, `rule_id=${rule.id}`);
      await first.close();

      const second = await buildApp(store);
      try {
        // On MongoDB the pack is taken over at start (cluster/pack-ownership.ts): counted once adopted.
        await evaluated(second);
        assert.equal(await metric(second, 'alarms_open{severity="critical"}'), 1);
        // Still past critical after the restart: the same alarm, no new event.
        await post(second, volts('rs-1', BASE, [[2, 436]]));
        assert.deepEqual(types(await alarmOf(second, open.id)), ['raised']);
        await post(second, volts('rs-1', BASE, [[3, 400]]));
        const alarms = await alarmsOf(second, `rule_id=${rule.id}`);
        assert.equal(alarms.length, 1);
        assert.equal(alarms[0].id, open.id);
        assert.deepEqual(types(await alarmOf(second, open.id)), ['raised', 'cleared']);
        assert.equal(await metric(second, 'alarms_open{severity="critical"}'), 0);
      } finally {
        await second.close();
      }
    });

    it('restart after a crash between commit and alarm write: records stored but not evaluated are evaluated at start', async () => {
      const store = settings.fresh();
      const first = await buildApp(store);
      const rule = await createRule(first, voltageRule('cr-1', { battery_id: null, name: 'crash voltage' }));
      await post(first, volts('cr-1', BASE, [[0, 400]]));
      await first.close();
      // What a process killed right after a commit leaves: records in the store the alarm engine never saw,
      // of a pack it knows (cr-1: raised, then cleared) and of one it has never seen (cr-2: still open).
      const records = await openStore(testConfig(store), { info() {}, warn() {} });
      const batch = new RecordBatch('battery-data');
      // A pack first seen after the last alarm write is read back from an hour before that write.
      const recent = Math.floor(Date.now() / 1000) - 60;
      for (const r of [...volts('cr-1', BASE, [[1, 435], [2, 400]]), ...volts('cr-2', recent, [[1, 425]])]) batch.append(r, Date.now() / 1000);
      const [outcome] = await records.write([batch]);
      assert.ok(outcome?.ok);
      await records.close();

      const second = await buildApp(store);
      try {
        const alarms = await alarmsOf(second, `rule_id=${rule.id}`);
        assert.deepEqual(
          alarms.map((a) => [a.battery_id, a.state, a.raised_at]),
          [
            ['cr-2', 'active', recent + 1],
            ['cr-1', 'cleared', BASE + 1],
          ],
        );
        assert.equal(await metric(second, 'alarms_open{severity="warning"}'), 1);
      } finally {
        await second.close();
      }
    });

    it('default rules: made from the specs file at first start; an edited one stops following it; a deleted one is not made again', async () => {
      const store = settings.fresh();
      const dir = tempDir();
      const specs = JSON.parse(readFileSync(DEFAULT_SPECS_FILE, 'utf8'));
      const firstSpecs = path.join(dir, 'first.json');
      writeFileSync(firstSpecs, JSON.stringify(specs));
      const first = await buildApp({ ...store, batterySpecsFile: firstSpecs, noDataSeconds: 90 });
      const rules = (await call(first, '/api/alarm-rules')).body.rules;
      assert.deepEqual(rules.map((r: any) => r.id).sort(), ['cell-imbalance', 'current', 'health', 'no-data', 'temperature', 'temperature-rise', 'voltage']);
      const byId = Object.fromEntries(rules.map((r: any) => [r.id, r]));
      const thresholds = specs.monitoring_thresholds;
      assert.deepEqual(byId.temperature.warning, { below: thresholds.temperature.min, above: thresholds.temperature.max });
      assert.deepEqual(byId.temperature.critical, { below: thresholds.temperature.critical_low, above: thresholds.temperature.critical_high });
      assert.deepEqual([byId.health.kind, byId.health.field, byId.health.warning, byId.health.critical], [
        'battery-performance',
        'health_score',
        { below: thresholds.health.warning },
        { below: thresholds.health.critical },
      ]);
      assert.deepEqual(byId['no-data'].warning, { above: 90 });
      assert.ok(rules.every((r: any) => r.builtin && !r.customized));
      const edited = await call(first, '/api/alarm-rules/voltage', { method: 'PUT', body: { ...byId.voltage, warning: { below: 300, above: 450 } } });
      assert.equal(edited.body.customized, true);
      assert.equal((await call(first, '/api/alarm-rules/current', { method: 'DELETE' })).status, 204);
      await first.close();

      specs.monitoring_thresholds.temperature.max = 43;
      specs.monitoring_thresholds.voltage.max = 445;
      const secondSpecs = path.join(dir, 'second.json');
      writeFileSync(secondSpecs, JSON.stringify(specs));
      const second = await buildApp({ ...store, batterySpecsFile: secondSpecs, noDataSeconds: 120 });
      try {
        const after = Object.fromEntries((await call(second, '/api/alarm-rules')).body.rules.map((r: any) => [r.id, r]));
        assert.equal(after.temperature.warning.above, 43);
        assert.deepEqual(after['no-data'].warning, { above: 120 });
        assert.deepEqual(after.voltage.warning, { below: 300, above: 450 });
        assert.equal(after.current, undefined);
      } finally {
        await second.close();
      }
    });
  });
}
