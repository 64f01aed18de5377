/**
 * Per-cell readings and the `source` filter on reads (issue 10), through the whole service on real
 * sockets: HTTP, the TCP JSON collector, latest, history, aggregate and export. Written once and run
 * on every store (cells-sqlite.test.ts, cells-mongodb.test.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Config } from '../../src/config.js';
import type { Service } from '../../src/server.js';
import { eventually, sendChunks } from '../collector/helpers.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

const reading = (battery_id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  pack_voltage: 398.2,
  pack_current: -12.5,
  cell_temp: 31.2,
  battery_id,
  ...extra,
});

/** 96 cells with doubles a decimal round trip could change. */
const VOLTAGES = Array.from({ length: 96 }, (_, i) => 3.6 + ((i * 7919) % 97) / 1000 + 1e-13 * (i % 3));
const TEMPS = [24.5, 26.25, 27.125, 25.0625, 23.75, 28.5, 27, 26];

/** What the server must derive, worked out here. */
const derived = (voltages: number[] | undefined, temps: number[] | undefined) => ({
  ...(voltages === undefined
    ? {}
    : { cell_voltage_min: Math.min(...voltages), cell_voltage_max: Math.max(...voltages), cell_voltage_delta: Math.max(...voltages) - Math.min(...voltages) }),
  ...(temps === undefined ? {} : { cell_temp_max: Math.max(...temps) }),
});

const CELL_FIELDS = ['cell_voltages', 'cell_temps', 'cell_voltage_min', 'cell_voltage_max', 'cell_voltage_delta', 'cell_temp_max'];
const ORIGINAL_FIELDS = ['_id', 'timestamp', 'received_at', 'source', 'battery_id', 'pack_voltage', 'pack_current', 'cell_temp'];

/** A CSV's rows by its header (no quoted cells in these records). */
function csvRows(text: string): Record<string, string>[] {
  const [header, ...lines] = text.trim().split('\n');
  const names = header!.split(',');
  return lines.map((line) => Object.fromEntries(line.split(',').map((cell, i) => [names[i], cell])));
}

async function text(service: Service, path: string): Promise<string> {
  const response = await fetch(service.url + path);
  assert.equal(response.status, 200, path);
  return response.text();
}

async function metric(service: Service, series: string): Promise<number> {
  const body = (await call<string>(service.url, '/metrics')).body;
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

export function cellsSuite(name: string, storeSettings: () => Promise<Partial<Config>>): void {
  describe(`per-cell readings and the source filter on ${name}`, () => {
    let service: Service;
    before(async () => {
      service = await startTestService(await storeSettings(), { collector: true });
    });
    after(() => service?.close());

    it('HTTP: cells and what is derived from them come back from latest, history and export; a record without cells has none of their keys', async () => {
      const now = Date.now() / 1000;
      const single = await call(service.url, '/api/battery-data', { body: reading('http-cells', { timestamp: now - 30, cell_voltages: VOLTAGES, cell_temps: TEMPS }) });
      assert.equal(single.status, 200, JSON.stringify(single.body));
      const batch = await call(service.url, '/api/battery-data', {
        body: [
          // The producer's own derived values are no input: ignored, the server's stored instead.
          reading('http-cells', { timestamp: now - 20, cell_voltages: [3.7, 3.8], cell_voltage_delta: 99, cell_temp_max: 1000 }),
          reading('http-cells', { timestamp: now - 10 }),
        ],
      });
      assert.equal(batch.status, 200, JSON.stringify(batch.body));

      const latest = (await call(service.url, '/api/battery-data/latest?battery_id=http-cells')).body;
      assert.deepEqual(Object.keys(latest), ORIGINAL_FIELDS, 'no new key in a record without cells');
      const history = (await call(service.url, '/api/battery-data/history?battery_id=http-cells&hours=1')).body;
      assert.equal(history.length, 3);
      const [withoutCells, twoCells, full] = history;
      assert.deepEqual(withoutCells, latest);
      assert.deepEqual(
        Object.fromEntries(CELL_FIELDS.filter((field) => field in full).map((field) => [field, full[field]])),
        { cell_voltages: VOLTAGES, cell_temps: TEMPS, ...derived(VOLTAGES, TEMPS) },
      );
      assert.equal(full._id, single.body.id);
      assert.deepEqual(
        Object.fromEntries(CELL_FIELDS.filter((field) => field in twoCells).map((field) => [field, twoCells[field]])),
        { cell_voltages: [3.7, 3.8], cell_voltage_min: 3.7, cell_voltage_max: 3.8, cell_voltage_delta: 3.8 - 3.7 },
      );

      const ndjson = (await text(service, '/api/battery-data/export?battery_id=http-cells&hours=1&format=ndjson'))
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      assert.deepEqual(ndjson, [...history].reverse());
      const csv = csvRows(await text(service, '/api/battery-data/export?battery_id=http-cells&hours=1&format=csv'));
      assert.equal(csv.length, 3);
      assert.equal(csv[0]!.cell_voltages, VOLTAGES.join(';'), 'an array is one cell, its numbers joined by ;');
      assert.deepEqual(csv[0]!.cell_voltages!.split(';').map(Number), VOLTAGES, 'and reads back exactly');
      assert.equal(csv[0]!.cell_temps, TEMPS.join(';'));
      assert.equal(Number(csv[0]!.cell_voltage_delta), derived(VOLTAGES, TEMPS).cell_voltage_delta);
      assert.equal(Number(csv[0]!.cell_temp_max), 28.5);
      assert.equal(csv[1]!.cell_temps, '');
      for (const field of CELL_FIELDS) assert.equal(csv[2]![field], '', `${field} is empty for a record without cells`);

      // The dashboard's latest reading carries them too.
      const dashboard = (await call(service.url, '/api/dashboard?battery_id=http-cells')).body;
      assert.deepEqual(Object.keys(dashboard.battery_data), ORIGINAL_FIELDS);
    });

    it('refuses 1,025 values, a non-finite or non-number value and a non-array with 422 naming the field, storing nothing', async () => {
      const cases: [string, unknown, (string | number)[], string][] = [
        ['too many', reading('bad-cells', { cell_voltages: Array.from({ length: 1025 }, () => 3.7) }), ['body', 'cell_voltages'], 'value_error.list.max_items'],
        ['non-finite', '{"pack_voltage": 1, "pack_current": 1, "cell_temp": 1, "battery_id": "bad-cells", "cell_voltages": [3.7, 1e999]}', ['body', 'cell_voltages', 1], 'type_error.float'],
        ['a string', reading('bad-cells', { cell_temps: [25, '26'] }), ['body', 'cell_temps', 1], 'type_error.float'],
        ['null', reading('bad-cells', { cell_voltages: [3.7, null] }), ['body', 'cell_voltages', 1], 'type_error.float'],
        ['not an array', reading('bad-cells', { cell_voltages: 3.7 }), ['body', 'cell_voltages'], 'type_error.list'],
        ['an object', reading('bad-cells', { cell_temps: { 0: 25 } }), ['body', 'cell_temps'], 'type_error.list'],
        ['beyond ±3.4e38', reading('bad-cells', { cell_temps: [1e39] }), ['body', 'cell_temps', 0], 'value_error.number.not_le'],
        ['in an array of records', [reading('bad-cells'), reading('bad-cells', { cell_voltages: [3.7, 'x'] })], ['body', 1, 'cell_voltages', 1], 'type_error.float'],
      ];
      for (const [what, body, loc, type] of cases) {
        const answer = await call(service.url, '/api/battery-data', { body });
        assert.equal(answer.status, 422, what);
        assert.deepEqual(answer.body.detail.map((entry: { loc: unknown }) => entry.loc), [loc], what);
        assert.equal(answer.body.detail[0].type, type, what);
      }
      assert.equal((await call(service.url, '/api/battery-data/latest?battery_id=bad-cells')).status, 404);
      // 1,024 is the bound, not past it.
      const most = await call(service.url, '/api/battery-data', { body: reading('most-cells', { cell_voltages: Array.from({ length: 1024 }, (_, i) => 3 + i / 1024) }) });
      assert.equal(most.status, 200);
      assert.equal((await call(service.url, '/api/battery-data/latest?battery_id=most-cells')).body.cell_voltages.length, 1024);
    });

    it('the TCP JSON collector: cells round trip over a real socket, and a bad message costs only itself', async () => {
      const now = Date.now() / 1000;
      const rejected = 'collector_rejected_total{listener="json",reason="invalid_record"}';
      const before = await metric(service, rejected);
      const message = (timestamp: number, extra: Record<string, unknown>) => JSON.stringify(reading('tcp-cells', { timestamp, ...extra }));
      const lines = [
        message(now - 5, { cell_voltages: VOLTAGES, cell_temps: TEMPS }),
        message(now - 4, { cell_voltages: Array.from({ length: 1025 }, () => 3.7) }),
        message(now - 3, {}),
        '{"pack_voltage": 1, "pack_current": 1, "cell_temp": 1, "battery_id": "tcp-cells", "cell_voltages": [1e999]}',
        message(now - 2, { cell_temps: 'warm' }),
        message(now - 1, { cell_voltages: [3.71, 3.69], cell_voltage_max: 7 }),
      ];
      // Cut into small writes: a message with cells spans reads.
      const bytes = Buffer.from(`${lines.join('\n')}\n`);
      const chunks = Array.from({ length: Math.ceil(bytes.length / 997) }, (_, i) => bytes.subarray(i * 997, (i + 1) * 997));
      await sendChunks(service.collector!.jsonPort, chunks);
      const history = async () => (await call(service.url, '/api/battery-data/history?battery_id=tcp-cells&hours=1')).body as Record<string, unknown>[];
      await eventually(async () => (await history()).length === 3, 'the three good messages are stored');
      await eventually(async () => (await metric(service, rejected)) - before === 3, 'the three bad ones are counted');
      const [last, middle, first] = await history();
      assert.deepEqual([first!.cell_voltages, first!.cell_temps], [VOLTAGES, TEMPS]);
      assert.equal(first!.cell_voltage_delta, derived(VOLTAGES, TEMPS).cell_voltage_delta);
      assert.equal(first!.cell_temp_max, 28.5);
      assert.deepEqual(Object.keys(middle!), ORIGINAL_FIELDS);
      assert.deepEqual([last!.cell_voltage_min, last!.cell_voltage_max, last!.cell_voltage_delta], [3.69, 3.71, 3.71 - 3.69]);
    });

    it('aggregates cell_voltage_delta per bucket over the records that have cells, raw and from rollups', async () => {
      const now = Math.floor(Date.now() / 1000);
      const records = Array.from({ length: 40 }, (_, i) => {
        const cells = i % 2 === 0 ? { cell_voltages: [3.6, 3.6 + (i % 9) / 1000, 3.61 + (i % 5) / 100] } : {};
        return reading('agg-cells', { timestamp: now - 1200 + i * 30, ...cells });
      });
      assert.equal((await call(service.url, '/api/battery-data', { body: records })).status, 200);
      const deltas = records.filter((r) => 'cell_voltages' in r).map((r) => ({ t: r.timestamp as number, delta: derived(r.cell_voltages as number[], undefined).cell_voltage_delta! }));
      for (const query of ['hours=1&buckets=1000', 'hours=1&buckets=20', 'hours=48&buckets=2']) {
        const answer = (await call(service.url, `/api/battery-data/aggregate?battery_id=agg-cells&${query}`)).body;
        assert.equal(answer.buckets.reduce((n: number, b: { count: number }) => n + b.count, 0), 40, query);
        for (const bucket of answer.buckets) {
          const inside = deltas.filter(({ t }) => t >= bucket.start && t < bucket.start + answer.bucket_seconds).map(({ delta }) => delta);
          if (inside.length === 0) {
            assert.equal('cell_voltage_delta' in bucket.mean, false, query);
            continue;
          }
          assert.equal(bucket.min.cell_voltage_delta, Math.min(...inside), query);
          assert.equal(bucket.max.cell_voltage_delta, Math.max(...inside), query);
          const mean = inside.reduce((a, b) => a + b, 0) / inside.length;
          assert.ok(Math.abs(bucket.mean.cell_voltage_delta - mean) < 1e-12, `${query}: ${bucket.mean.cell_voltage_delta} vs ${mean}`);
          assert.equal(typeof bucket.mean.pack_voltage, 'number');
        }
      }
    });

    it('a cell_imbalance alarm rule judges real records by the cell_voltage_delta the server derived', async () => {
      const created = await call(service.url, '/api/alarm-rules', {
        body: { name: 'imbalance of imbalance-cells', type: 'cell_imbalance', battery_id: 'imbalance-cells', warning: { above: 0.05 } },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const now = Date.now() / 1000;
      const post = async (t: number, extra: Record<string, unknown>) =>
        assert.equal((await call(service.url, '/api/battery-data', { body: reading('imbalance-cells', { timestamp: now - 10 + t, ...extra }) })).status, 200);
      const alarms = async () => (await call(service.url, `/api/alarms?rule_id=${created.body.id}`)).body.alarms as { state: string; severity: string; value: number }[];
      await post(0, { cell_voltages: [3.7, 3.72] });
      assert.deepEqual(await alarms(), []);
      // 80 mV between the highest and the lowest cell: raised.
      await post(1, { cell_voltages: [3.7, 3.78, 3.71] });
      await eventually(async () => (await alarms()).length === 1, 'the alarm is raised');
      const [raised] = await alarms();
      assert.deepEqual([raised!.state, raised!.severity], ['active', 'warning']);
      // A reading without cells says nothing about them; a balanced one clears the alarm.
      await post(2, {});
      assert.equal((await alarms())[0]!.state, 'active');
      await post(3, { cell_voltages: [3.7, 3.71] });
      await eventually(async () => (await alarms())[0]!.state === 'cleared', 'the alarm clears');
    });

    it('a threshold rule may judge a derived field (cell_temp_max): the hottest sensor raises it', async () => {
      const created = await call(service.url, '/api/alarm-rules', {
        body: { name: 'hottest cell of hot-cells', type: 'threshold', kind: 'battery-data', field: 'cell_temp_max', battery_id: 'hot-cells', critical: { above: 60 } },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const now = Date.now() / 1000;
      // The pack's own cell_temp is cool; one of its sensors is not.
      const answer = await call(service.url, '/api/battery-data', { body: reading('hot-cells', { timestamp: now - 5, cell_temp: 30, cell_temps: [31, 64, 30] }) });
      assert.equal(answer.status, 200);
      await eventually(async () => {
        const alarms = (await call(service.url, `/api/alarms?rule_id=${created.body.id}`)).body.alarms as { severity: string; value: number }[];
        return alarms.length === 1 && alarms[0]!.severity === 'critical' && alarms[0]!.value === 64;
      }, 'the alarm is raised at 64 °C');
    });

    it('reads filter by source: latest, history, aggregate and export, with the limits of the field; the OpenAPI document says so', async () => {
      const now = Date.now() / 1000;
      const performance = (t: number, source?: string) => ({
        pack_voltage: 396,
        pack_current: -10,
        cell_temp: 30,
        capacity_remaining: 87.5,
        cycle_count: 412,
        age_months: 18,
        health_score: 92.3 - t,
        battery_id: 'src-pack',
        timestamp: now - 100 + t,
        ...(source === undefined ? {} : { source }),
      });
      const body = [performance(0, 'battery_monitor_analytics'), performance(1, 'predictor-x'), performance(2, 'battery_monitor_analytics'), performance(3)];
      assert.equal((await call(service.url, '/api/battery-performance', { body })).status, 200);
      const base = '/api/battery-performance';
      const analytics = 'battery_monitor_analytics';
      assert.equal((await call(service.url, `${base}/latest?battery_id=src-pack&source=${analytics}`)).body.timestamp, now - 98);
      assert.equal((await call(service.url, `${base}/latest?battery_id=src-pack&source=predictor-x`)).body.timestamp, now - 99);
      assert.equal((await call(service.url, `${base}/latest?battery_id=src-pack&source=battery_ai_predictor`)).body.timestamp, now - 97);
      assert.equal((await call(service.url, `${base}/latest?battery_id=src-pack`)).body.timestamp, now - 97);
      const none = await call(service.url, `${base}/latest?battery_id=src-pack&source=nobody`);
      assert.deepEqual([none.status, none.body.detail], [404, 'No battery performance found for battery src-pack from source nobody']);
      const history = (await call(service.url, `${base}/history?battery_id=src-pack&hours=1&source=${analytics}`)).body;
      assert.deepEqual(history.map((r: { timestamp: number }) => r.timestamp), [now - 98, now - 100]);
      const exported = (await text(service, `${base}/export?battery_id=src-pack&hours=1&format=ndjson&source=predictor-x`)).trim().split('\n');
      assert.deepEqual(exported.map((line) => JSON.parse(line).source), ['predictor-x']);
      const aggregate = (await call(service.url, `${base}/aggregate?battery_id=src-pack&hours=1&buckets=1&source=${analytics}`)).body;
      assert.deepEqual(aggregate.buckets.map((b: { count: number }) => b.count), [2]);

      for (const source of ['', 'x'.repeat(129)]) {
        for (const read of ['latest?', 'history?', 'aggregate?', 'export?']) {
          const answer = await call(service.url, `${base}/${read}source=${source}`);
          assert.equal(answer.status, 422, `${read} source of ${source.length}`);
          assert.deepEqual(answer.body.detail[0].loc, ['query', 'source']);
        }
      }
      assert.equal((await call(service.url, `${base}/latest?source=${'x'.repeat(128)}`)).status, 404);

      const doc = (await call(service.url, '/openapi.json')).body;
      for (const kind of ['battery-data', 'battery-performance', 'battery-prediction']) {
        for (const read of ['latest', 'history', 'aggregate', 'export']) {
          const parameter = doc.paths[`/api/${kind}/${read}`].get.parameters.find((p: { name: string; in: string }) => p.name === 'source' && p.in === 'query');
          assert.ok(parameter, `${kind}/${read} documents source`);
          assert.deepEqual([parameter.schema.minLength, parameter.schema.maxLength], [1, 128]);
          assert.match(parameter.schema.description ?? parameter.description, /source/);
        }
      }
    });
  });
}
