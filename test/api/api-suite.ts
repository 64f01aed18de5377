/**
 * The HTTP API's behaviour, written once and run against every store (api-sqlite.test.ts,
 * api-mongodb.test.ts), through `inject` (a socket only for the live stream).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { buildApp, call, listen } from '../support/helper.js';

/** The original service's example payloads, one per kind. */
export const EXAMPLES = {
  'battery-data': { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 },
  'battery-performance': {
    pack_voltage: 396.0,
    pack_current: -10.0,
    cell_temp: 30.0,
    capacity_remaining: 87.5,
    cycle_count: 412,
    age_months: 18,
    health_score: 92.3,
  },
  'battery-prediction': { remaining_life_hours: 15000.5, remaining_cycles: 1200, degradation_rate: 0.021 },
} as const;

const DEFAULT_SOURCES = { 'battery-data': 'battery_monitor', 'battery-performance': 'battery_ai_predictor', 'battery-prediction': 'battery_ai_predictor' };
const KINDS = Object.keys(EXAMPLES) as (keyof typeof EXAMPLES)[];

export function apiSuite(name: string, storeSettings: () => Promise<Partial<Config>>): void {
  describe(`HTTP API on ${name}`, () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildApp(await storeSettings());
    });
    after(() => app.close());

    it('answers /health with the store named', async () => {
      const { status, body } = await call(app, '/health');
      assert.equal(status, 200);
      assert.equal(body.status, 'healthy');
      assert.equal(body.database, 'connected');
      assert.equal(body.store, name);
    });

    for (const kind of KINDS) {
      describe(kind, () => {
        const pack = `${kind}-pack`;
        it('404s latest with a detail before anything is stored', async () => {
          const { status, body } = await call(app, `/api/${kind}/latest?battery_id=${pack}`);
          assert.equal(status, 404);
          assert.equal(typeof body.detail, 'string');
        });

        it('stores the original example payload and serves it back with server defaults', async () => {
          const before = Date.now() / 1000;
          const posted = await call(app, `/api/${kind}`, { body: { ...EXAMPLES[kind], battery_id: pack } });
          assert.equal(posted.status, 200);
          assert.match(posted.body.message, /stored successfully/);
          assert.equal(typeof posted.body.id, 'string');
          const latest = await call(app, `/api/${kind}/latest?battery_id=${pack}`);
          assert.equal(latest.status, 200);
          const { _id, timestamp, received_at, ...rest } = latest.body;
          assert.equal(_id, posted.body.id);
          assert.ok(timestamp >= before - 1 && timestamp <= Date.now() / 1000 + 1, 'timestamp defaults to server time');
          assert.equal(received_at, timestamp);
          assert.deepEqual(rest, { ...EXAMPLES[kind], battery_id: pack, source: DEFAULT_SOURCES[kind] });
        });

        it('keeps a given timestamp and source, drops unknown fields', async () => {
          const timestamp = Date.now() / 1000 - 60;
          const posted = await call(app, `/api/${kind}`, {
            body: { ...EXAMPLES[kind], battery_id: `${pack}-given`, timestamp, source: 'bms-7', firmware: '1.2.3', $where: 'x' },
          });
          assert.equal(posted.status, 200);
          const [record] = (await call(app, `/api/${kind}/history?battery_id=${pack}-given&hours=1&limit=1`)).body;
          assert.equal(record.timestamp, timestamp);
          assert.equal(record.source, 'bms-7');
          assert.equal('firmware' in record, false);
          assert.equal('$where' in record, false);
        });

        it('answers 422 naming each missing or non-numeric field, and stores nothing', async () => {
          const [first, second] = Object.keys(EXAMPLES[kind]);
          const body: Record<string, unknown> = { ...EXAMPLES[kind], battery_id: `${pack}-bad` };
          delete body[first!];
          body[second!] = 'high';
          const { status, body: answer } = await call(app, `/api/${kind}`, { body });
          assert.equal(status, 422);
          const locs = answer.detail.map((d: { loc: string[] }) => d.loc.join('.'));
          assert.deepEqual(locs.sort(), [`body.${first}`, `body.${second}`].sort());
          assert.equal((await call(app, `/api/${kind}/latest?battery_id=${pack}-bad`)).status, 404);
        });
      });
    }

    it('ignores __proto__ and constructor.prototype like any unknown field, touching no prototype', async () => {
      const body = `{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3, "battery_id": "proto-pack", "__proto__": {"polluted": 1}, "x": {"constructor": {"prototype": {"polluted": 2}}}}`;
      const { status } = await call(app, '/api/battery-data', { body });
      assert.equal(status, 200);
      assert.equal(({} as { polluted?: number }).polluted, undefined);
      const latest = (await call(app, '/api/battery-data/latest?battery_id=proto-pack')).body;
      assert.deepEqual(Object.keys(latest).sort(), ['_id', 'battery_id', 'cell_temp', 'pack_current', 'pack_voltage', 'received_at', 'source', 'timestamp']);
    });

    it('keeps device_time on battery data (the standalone collector forwards it), and only there', async () => {
      const posted = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'clock-pack', device_time: 1234.5 } });
      assert.equal(posted.status, 200);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=clock-pack')).body.device_time, 1234.5);
      await call(app, '/api/battery-prediction', { body: { ...EXAMPLES['battery-prediction'], battery_id: 'clock-pack', device_time: 1 } });
      assert.equal('device_time' in (await call(app, '/api/battery-prediction/latest?battery_id=clock-pack')).body, false);
    });

    it('refuses non-finite numbers and fractional cycle counts', async () => {
      const overflow = await call(app, '/api/battery-data', { body: '{"pack_voltage": 1e999, "pack_current": 1, "cell_temp": 1}' });
      assert.equal(overflow.status, 422);
      assert.deepEqual(overflow.body.detail[0].loc, ['body', 'pack_voltage']);
      const fractional = await call(app, '/api/battery-performance', { body: { ...EXAMPLES['battery-performance'], cycle_count: 41.5 } });
      assert.equal(fractional.status, 422);
      assert.deepEqual(fractional.body.detail[0].loc, ['body', 'cycle_count']);
    });

    it('refuses a timestamp outside plausible time with 422 naming it, and stores nothing', async () => {
      const skew = app.config.maxClockSkewSeconds;
      const now = Date.now() / 1000;
      // -8.97e219 and 7.8e280 were stored before: records no time window finds and retention removes.
      for (const timestamp of [-8.97e219, 7.8e280, 946_684_799.5, now + skew + 600]) {
        const { status, body } = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'time-pack', timestamp } });
        assert.equal(status, 422, String(timestamp));
        assert.deepEqual(body.detail.map((d: { loc: unknown[] }) => d.loc), [['body', 'timestamp']], String(timestamp));
        assert.match(body.detail[0].type, /^value_error\.number\.not_(ge|le)$/);
      }
      const batch = [{ ...EXAMPLES['battery-data'], battery_id: 'time-pack' }, { ...EXAMPLES['battery-data'], battery_id: 'time-pack', timestamp: now + skew + 600 }];
      const refused = await call(app, '/api/battery-data', { body: batch });
      assert.deepEqual(refused.body.detail[0].loc, ['body', 1, 'timestamp']);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=time-pack')).status, 404);
      // Inside the bounds: 2000-01-01 itself, and a clock running ahead by less than the setting.
      for (const timestamp of [946_684_800, now + skew - 600]) {
        assert.equal((await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'time-pack', timestamp } })).status, 200);
      }
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=time-pack')).body.timestamp, now + skew - 600);
    });

    it('takes only safe integers as cycle counts, and reads them back exactly', async () => {
      for (const cycle_count of ['2.9e27', '9007199254740992', '-9007199254740992']) {
        const { status, body } = await call(app, '/api/battery-performance', {
          body: JSON.stringify({ ...EXAMPLES['battery-performance'], battery_id: 'cycles-pack' }).replace('"cycle_count":412', `"cycle_count":${cycle_count}`),
        });
        assert.equal(status, 422, cycle_count);
        assert.deepEqual(body.detail[0].loc, ['body', 'cycle_count']);
      }
      const largest = Number.MAX_SAFE_INTEGER;
      assert.equal((await call(app, '/api/battery-performance', { body: { ...EXAMPLES['battery-performance'], battery_id: 'cycles-pack', cycle_count: largest } })).status, 200);
      const latest = await app.inject('/api/battery-performance/latest?battery_id=cycles-pack');
      assert.match(latest.body, /"cycle_count":9007199254740991[,}]/);
    });

    it('refuses measurements past ±3.4e38, so that aggregates stay numbers', async () => {
      // Two of 1.7e308 sum to Infinity: the mean was answered as null.
      const { status, body } = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'huge-pack', pack_voltage: 1.7e308 } });
      assert.equal(status, 422);
      assert.deepEqual(body.detail[0].loc, ['body', 'pack_voltage']);
      const now = Date.now() / 1000;
      const extreme = [3.4e38, 3.4e38, -3.4e38].map((pack_voltage, i) => ({ ...EXAMPLES['battery-data'], battery_id: 'huge-pack', pack_voltage, pack_current: pack_voltage, timestamp: now - 10 + i }));
      assert.equal((await call(app, '/api/battery-data', { body: extreme })).status, 200);
      for (const hours of [1, 48]) {
        const { buckets } = (await call(app, `/api/battery-data/aggregate?battery_id=huge-pack&hours=${hours}`)).body;
        assert.equal(buckets.reduce((n: number, b: { count: number }) => n + b.count, 0), 3);
        for (const bucket of buckets) {
          for (const stat of ['min', 'max', 'mean']) {
            for (const field of Object.keys(EXAMPLES['battery-data'])) assert.equal(typeof bucket[stat][field], 'number', `${hours} h ${stat}.${field}`);
          }
        }
      }
    });

    it('answers 405 with Allow for a known path asked with a method it does not serve', async () => {
      for (const [method, path, allow] of [
        ['POST', '/api/battery-data/latest', 'GET, HEAD'],
        ['GET', '/api/battery-prediction', 'POST'],
        ['DELETE', '/health', 'GET, HEAD'],
        ['PUT', '/api/batteries', 'GET, HEAD'],
        ['PATCH', '/', 'GET, HEAD'],
        // A body method without a Content-Type fails body parsing before any handler: still 405.
        ['QUERY', '/api/dashboard', 'GET, HEAD'],
      ] as const) {
        const response = await call(app, path, { method });
        assert.equal(response.status, 405, `${method} ${path}`);
        assert.equal(response.headers.get('allow'), allow, `${method} ${path}`);
        assert.deepEqual(response.body, { detail: 'Method Not Allowed' });
      }
      // What is served is served as before: the dashboard, reads, and unknown paths stay 404.
      assert.equal((await call(app, '/')).status, 200);
      assert.equal((await call(app, '/api/battery-data/history')).status, 200);
      for (const method of ['GET', 'POST', 'DELETE', 'QUERY']) assert.equal((await call(app, '/api/no-such-thing', { method })).status, 404, method);
    });

    it('answers 422 for malformed JSON and bad battery ids, never 500', async () => {
      assert.equal((await call(app, '/api/battery-data', { body: '{"pack_voltage": ' })).status, 422);
      assert.equal((await call(app, '/api/battery-data', { body: 'null' })).status, 422);
      const badId = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'no spaces/allowed' } });
      assert.equal(badId.status, 422);
      assert.deepEqual(badId.body.detail[0].loc, ['body', 'battery_id']);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=a%20b')).status, 422);
    });

    it('stores an array as one all-or-nothing write', async () => {
      const batch = Array.from({ length: 50 }, (_, i) => ({ ...EXAMPLES['battery-data'], battery_id: 'batch-pack', pack_voltage: 300 + i }));
      const bad = batch.map((r) => ({ ...r }));
      bad[37] = { ...bad[37]!, cell_temp: 'hot' as never };
      const refused = await call(app, '/api/battery-data', { body: bad });
      assert.equal(refused.status, 422);
      assert.deepEqual(refused.body.detail[0].loc, ['body', 37, 'cell_temp']);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=batch-pack')).status, 404);

      const stored = await call(app, '/api/battery-data', { body: batch });
      assert.equal(stored.status, 200);
      assert.equal(stored.body.count, 50);
      assert.equal(stored.body.ids.length, 50);
      assert.equal(new Set(stored.body.ids).size, 50);
      const history = await call(app, '/api/battery-data/history?battery_id=batch-pack&limit=100');
      assert.equal(history.body.length, 50);
    });

    it('bounds arrays at 10,000 records', async () => {
      const tooMany = Array.from({ length: 10_001 }, () => EXAMPLES['battery-data']);
      const { status, body } = await call(app, '/api/battery-data', { body: tooMany });
      assert.equal(status, 422);
      assert.match(body.detail[0].msg, /10000/);
      assert.equal((await call(app, '/api/battery-data', { body: [] })).status, 422);
    });

    it('stores a retried POST with the same Idempotency-Key once', async () => {
      const body = [1, 2, 3].map((i) => ({ ...EXAMPLES['battery-data'], battery_id: 'idem-pack', pack_voltage: 380 + i }));
      const headers = { 'idempotency-key': 'spool-segment-7' };
      const first = await call(app, '/api/battery-data', { body, headers });
      const retry = await call(app, '/api/battery-data', { body, headers });
      assert.equal(first.status, 200);
      assert.equal(retry.status, 200);
      assert.deepEqual(retry.body.ids, first.body.ids);
      assert.equal((await call(app, '/api/battery-data/history?battery_id=idem-pack')).body.length, 3);
    });

    it('stores other records sent under an Idempotency-Key already used, instead of answering 200 for nothing', async () => {
      const headers = { 'idempotency-key': 'reused-key' };
      const first = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'reuse-a' }, headers });
      const other = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'reuse-b' }, headers });
      assert.equal(other.status, 200);
      assert.notEqual(other.body.id, first.body.id);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=reuse-b')).body._id, other.body.id);
      // A retry is still a retry when its fields come in another order.
      const { pack_voltage, pack_current, cell_temp } = EXAMPLES['battery-data'];
      const retry = await call(app, '/api/battery-data', { body: { battery_id: 'reuse-a', cell_temp, pack_current, pack_voltage }, headers });
      assert.equal(retry.body.id, first.body.id);
      assert.equal((await call(app, '/api/battery-data/history?battery_id=reuse-a')).body.length, 1);
    });

    it('filters every read by battery_id and lists the fleet', async () => {
      const now = Date.now() / 1000;
      for (const [pack, volts] of [['fleet-a', 401], ['fleet-b', 402], ['fleet-a', 403]] as const) {
        await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: pack, pack_voltage: volts, timestamp: now + volts - 500 } });
      }
      await call(app, '/api/battery-performance', { body: { ...EXAMPLES['battery-performance'], battery_id: 'fleet-b' } });
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=fleet-a')).body.pack_voltage, 403);
      assert.equal((await call(app, '/api/battery-data/latest?battery_id=fleet-b')).body.pack_voltage, 402);
      const history = (await call(app, '/api/battery-data/history?battery_id=fleet-a')).body;
      assert.deepEqual(history.map((r: { pack_voltage: number }) => r.pack_voltage), [403, 401]);
      const { batteries } = (await call(app, '/api/batteries')).body;
      const a = batteries.find((b: { battery_id: string }) => b.battery_id === 'fleet-a');
      const b = batteries.find((b: { battery_id: string }) => b.battery_id === 'fleet-b');
      assert.deepEqual(a.counts, { 'battery-data': 2, 'battery-performance': 0, 'battery-prediction': 0 });
      assert.deepEqual(b.counts, { 'battery-data': 1, 'battery-performance': 1, 'battery-prediction': 0 });
      assert.ok(Math.abs(a.last_seen - (now + 403 - 500)) < 1e-3);
      const dashboard = (await call(app, '/api/dashboard?battery_id=fleet-b')).body;
      assert.equal(dashboard.battery_data.pack_voltage, 402);
      assert.equal(dashboard.performance.health_score, 92.3);
      assert.equal(dashboard.prediction, null);
      assert.equal(dashboard.specs.chemistry.length > 0, true);
      assert.deepEqual(Object.keys(dashboard.thresholds).sort(), ['current', 'health', 'temperature', 'voltage']);
    });

    it('history is newest first within the window and bounded', async () => {
      const now = Date.now() / 1000;
      const body = [-7200, -1800, -60, -30].map((age) => ({ ...EXAMPLES['battery-data'], battery_id: 'window-pack', timestamp: now + age, pack_voltage: 400 + age / 60 }));
      await call(app, '/api/battery-data', { body });
      const lastHour = (await call(app, '/api/battery-data/history?battery_id=window-pack&hours=1')).body;
      assert.deepEqual(lastHour.map((r: { pack_voltage: number }) => r.pack_voltage), [399.5, 399, 370]);
      assert.equal((await call(app, '/api/battery-data/history?battery_id=window-pack&hours=3&limit=2')).body.length, 2);
      for (const query of ['limit=0', 'limit=10001', 'limit=abc', 'hours=0', 'hours=-1', 'hours=abc', 'hours=1e999', 'battery_id[$ne]=x', 'battery_id=a&battery_id=b']) {
        const { status, body: answer } = await call(app, `/api/battery-data/history?${query}`);
        assert.equal(status, 422, query);
        assert.equal(answer.detail[0].loc[0], 'query', query);
      }
    });

    it('aggregates and exports the stored rows', async () => {
      const now = Date.now() / 1000;
      const body = Array.from({ length: 30 }, (_, i) => ({ ...EXAMPLES['battery-data'], battery_id: 'agg-pack', timestamp: now - 600 + i * 10, pack_voltage: 390 + (i % 5) }));
      await call(app, '/api/battery-data', { body });
      const aggregate = (await call(app, '/api/battery-data/aggregate?battery_id=agg-pack&hours=1&buckets=60')).body;
      assert.ok(aggregate.bucket_seconds >= 36 && aggregate.bucket_seconds <= 120, String(aggregate.bucket_seconds));
      assert.ok(aggregate.buckets.length <= 60);
      assert.equal(aggregate.buckets.reduce((n: number, b: { count: number }) => n + b.count, 0), 30);
      assert.equal(Math.min(...aggregate.buckets.map((b: { min: { pack_voltage: number } }) => b.min.pack_voltage)), 390);
      assert.equal(Math.max(...aggregate.buckets.map((b: { max: { pack_voltage: number } }) => b.max.pack_voltage)), 394);
      assert.equal((await call(app, '/api/battery-data/aggregate?buckets=2001')).status, 422);

      const csv = await call(app, '/api/battery-data/export?battery_id=agg-pack&hours=1&format=csv');
      assert.equal(csv.status, 200);
      assert.match(csv.headers.get('content-type')!, /text\/csv/);
      const lines = (csv.body as string).trim().split('\n');
      // The per-cell columns come last, empty for records without cells: positions of the original columns hold.
      assert.equal(
        lines[0],
        '_id,timestamp,received_at,source,battery_id,device_time,pack_voltage,pack_current,cell_temp,' +
          'cell_voltages,cell_temps,cell_voltage_min,cell_voltage_max,cell_voltage_delta,cell_temp_max',
      );
      assert.equal(lines.length, 31);
      assert.match(lines[1]!, /,agg-pack,,390,-12.5,31.2,,,,,,$/);
      const ndjson = await call(app, '/api/battery-data/export?battery_id=agg-pack&hours=1&format=ndjson');
      const rows = (ndjson.body as string).trim().split('\n').map((line) => JSON.parse(line));
      assert.equal(rows.length, 30);
      assert.ok(rows.every((row, i) => i === 0 || row.timestamp >= rows[i - 1].timestamp));
    });

    it('pushes each stored record to stream subscribers, filtered by pack', async () => {
      const controller = new AbortController();
      const url = await listen(app);
      const response = await fetch(`${url}/api/stream?battery_id=live-pack`, { signal: controller.signal });
      assert.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      await reader.read(); // the greeting
      await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'other-pack' } });
      const posted = await call(app, '/api/battery-data', { body: { ...EXAMPLES['battery-data'], battery_id: 'live-pack', pack_voltage: 411 } });
      let text = '';
      while (!text.includes('\n\n')) text += decoder.decode((await reader.read()).value);
      controller.abort();
      assert.match(text, /^event: battery-data\nid: /);
      const record = JSON.parse(text.split('\n').find((line) => line.startsWith('data: '))!.slice(6));
      assert.equal(record._id, posted.body.id);
      assert.equal(record.pack_voltage, 411);
      assert.equal(record.battery_id, 'live-pack');
    });

    it('answers CORS preflights for the configured origins only', async () => {
      const allowed = await call(app, '/api/battery-data', {
        method: 'OPTIONS',
        headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
      assert.equal(allowed.status, 204);
      assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://localhost:5173');
      const other = await call(app, '/api/battery-data', {
        method: 'OPTIONS',
        headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
      });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    });

    it('serves the OpenAPI document and Swagger UI, with every kind documented', async () => {
      const { status, body } = await call(app, '/openapi.json');
      assert.equal(status, 200);
      assert.match(body.openapi, /^3\./);
      for (const kind of KINDS) {
        for (const path of ['', '/latest', '/history', '/aggregate', '/export']) assert.ok(body.paths[`/api/${kind}${path}`], `${kind}${path}`);
        const requestSchema = JSON.stringify(body.paths[`/api/${kind}`].post.requestBody);
        const [, name] = /#\/components\/schemas\/(\w+)/.exec(requestSchema) ?? [];
        const properties = body.components.schemas[name!].properties;
        for (const field of Object.keys(EXAMPLES[kind])) {
          assert.equal(typeof properties[field].description, 'string', `${kind}.${field} has a description`);
          assert.equal(typeof properties[field].example, 'number', `${kind}.${field} has an example`);
        }
      }
      const docs = await call(app, '/docs');
      assert.equal(docs.status, 200);
      assert.match(docs.body, /swagger/i);
    });

    it('404s unknown routes with a detail', async () => {
      const { status, body } = await call(app, '/api/battery-voltage');
      assert.equal(status, 404);
      assert.equal(body.detail, 'Not Found');
    });
  });
}
