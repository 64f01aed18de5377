/**
 * The Store contract, written once and run unchanged against every store (sqlite-store.test.ts,
 * mongodb-store.test.ts). `open` gives a fresh, empty store each time.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { csvColumns, KIND_NAMES, type KindName, type RecordInput } from '../../src/records/kinds.js';
import { MAX_MEASUREMENT } from '../../src/records/schemas.js';
import { planBuckets } from '../../src/store/buckets.js';
import type { Store } from '../../src/store/store.js';
import { exampleInput, expectedDerived } from '../records/examples.js';

export interface ConformanceOptions {
  open(): Promise<Store>;
  /** Whether a request is all or nothing when one of its records fails in the store. */
  atomicRequests: boolean;
}

const NOW = 1_732_700_000;
/** When the server took every record of these tests. */
export const RECEIVED_AT = NOW + 1000;

/** A record as a producer sends it; `key`, when set, is its idempotency key (not a field). */
export type TestRecord = RecordInput & { key?: string };

export function data(timestamp: number, battery_id = 'pack-1', voltage = 400, extra: RecordInput = {}): TestRecord {
  return { timestamp, battery_id, pack_voltage: voltage, pack_current: -10, cell_temp: 25, ...extra };
}

export function performance(timestamp: number, battery_id = 'pack-1'): TestRecord {
  return {
    timestamp,
    battery_id,
    pack_voltage: 396,
    pack_current: -10,
    cell_temp: 30,
    capacity_remaining: 87.5,
    cycle_count: 412,
    age_months: 18,
    health_score: 92.3,
  };
}

/** A batch as the ingest sink hands it to a store, every record received at RECEIVED_AT. */
export function batchOf(kind: KindName, records: readonly TestRecord[]): RecordBatch {
  const batch = new RecordBatch(kind, records.length);
  for (const { key, ...input } of records) batch.append(input, RECEIVED_AT, key);
  return batch;
}

async function withStore(options: ConformanceOptions, body: (store: Store) => Promise<void>): Promise<void> {
  const store = await options.open();
  try {
    await body(store);
  } finally {
    await store.close();
  }
}

async function writeOk(store: Store, kind: KindName, records: TestRecord[]): Promise<string[]> {
  const [outcome] = await store.write([batchOf(kind, records)]);
  assert.ok(outcome?.ok, `write failed: ${outcome && !outcome.ok ? outcome.error.message : ''}`);
  return outcome.ids;
}

export function storeConformance(name: string, options: ConformanceOptions): void {
  describe(`Store conformance: ${name}`, () => {
    it('answers null and empty lists when nothing is stored', () =>
      withStore(options, async (store) => {
        assert.equal(await store.latest('battery-data'), null);
        assert.deepEqual(await store.history('battery-data', { since: 0, limit: 10 }), []);
        assert.deepEqual(await store.batteries(), []);
        assert.equal((await store.health()).ok, true);
      }));

    it('stores records and reads back every field, ids distinct', () =>
      withStore(options, async (store) => {
        const record = data(NOW, 'pack-1', 398.25, { device_time: 1234.5, source: 'bms-7' });
        const ids = await writeOk(store, 'battery-data', [record, data(NOW + 1)]);
        assert.equal(ids.length, 2);
        assert.notEqual(ids[0], ids[1]);
        const [newer, older] = await store.history('battery-data', { since: 0, limit: 10 });
        assert.deepEqual(older, {
          _id: ids[0],
          timestamp: NOW,
          received_at: RECEIVED_AT,
          source: 'bms-7',
          battery_id: 'pack-1',
          device_time: 1234.5,
          pack_voltage: 398.25,
          pack_current: -10,
          cell_temp: 25,
        });
        assert.equal(newer?._id, ids[1]);
        assert.equal('device_time' in newer!, false);
      }));

    it('reads back every field of every kind, in the order of the kinds table', () =>
      withStore(options, async (store) => {
        for (const kind of KIND_NAMES) {
          const input = exampleInput(kind);
          const [id] = await writeOk(store, kind, [input]);
          const stored = await store.latest(kind);
          assert.deepEqual(stored, { _id: id, received_at: RECEIVED_AT, ...input, ...expectedDerived(input) });
          // The order too: it is the order of every answer's JSON and of the CSV export's columns.
          assert.deepEqual(Object.keys(stored!), csvColumns(kind));
        }
      }));

    it('keeps integer fields integers', () =>
      withStore(options, async (store) => {
        await writeOk(store, 'battery-performance', [performance(NOW)]);
        const latest = await store.latest('battery-performance');
        assert.equal(latest?.cycle_count, 412);
        assert.equal(latest?.health_score, 92.3);
      }));

    it('latest is the newest by timestamp, per pack or across packs', () =>
      withStore(options, async (store) => {
        await writeOk(store, 'battery-data', [data(NOW + 5, 'pack-1', 401), data(NOW + 9, 'pack-2', 402), data(NOW + 1, 'pack-1', 403)]);
        assert.equal((await store.latest('battery-data'))?.pack_voltage, 402);
        assert.equal((await store.latest('battery-data', 'pack-1'))?.pack_voltage, 401);
        assert.equal(await store.latest('battery-data', 'pack-3'), null);
        assert.equal(await store.latest('battery-prediction'), null);
      }));

    it('history is newest first, within the window, limited, filtered by pack', () =>
      withStore(options, async (store) => {
        const records = Array.from({ length: 20 }, (_, i) => data(NOW + i, i % 2 === 0 ? 'pack-1' : 'pack-2', 300 + i));
        await writeOk(store, 'battery-data', records);
        const all = await store.history('battery-data', { since: NOW + 10, limit: 100 });
        assert.deepEqual(all.map((r) => r.pack_voltage), [319, 318, 317, 316, 315, 314, 313, 312, 311, 310]);
        const limited = await store.history('battery-data', { since: 0, limit: 3 });
        assert.deepEqual(limited.map((r) => r.pack_voltage), [319, 318, 317]);
        const pack1 = await store.history('battery-data', { since: 0, limit: 100, batteryId: 'pack-1' });
        assert.equal(pack1.length, 10);
        assert.ok(pack1.every((r) => r.battery_id === 'pack-1'));
      }));

    it('groups several requests of several kinds in one write, one outcome each', () =>
      withStore(options, async (store) => {
        const outcomes = await store.write([
          batchOf('battery-data', [data(NOW)]),
          batchOf('battery-performance', [performance(NOW)]),
          batchOf('battery-data', [data(NOW + 1), data(NOW + 2)]),
        ]);
        assert.deepEqual(outcomes.map((o) => o.ok && o.ids.length), [1, 1, 2]);
        assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 3);
      }));

    it('stores a record with a known idempotency key only once and answers its id', () =>
      withStore(options, async (store) => {
        const keyed = (key: string, t: number) => ({ ...data(t), key });
        const first = await writeOk(store, 'battery-data', [keyed('batch-1:0', NOW), keyed('batch-1:1', NOW + 1)]);
        const again = await writeOk(store, 'battery-data', [keyed('batch-1:0', NOW), keyed('batch-1:1', NOW + 1), keyed('batch-2:0', NOW + 2)]);
        assert.deepEqual(again.slice(0, 2), first);
        assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 3);
        assert.equal((await store.batteries())[0]?.counts['battery-data'], 3);
      }));

    it('lists packs with their last-seen time and count per kind', () =>
      withStore(options, async (store) => {
        await writeOk(store, 'battery-data', [data(NOW, 'pack-2'), data(NOW + 3, 'pack-1'), data(NOW + 1, 'pack-1')]);
        await writeOk(store, 'battery-performance', [performance(NOW + 7, 'pack-1')]);
        const batteries = await store.batteries();
        assert.deepEqual(batteries.map((b) => b.battery_id).sort(), ['pack-1', 'pack-2']);
        const pack1 = batteries.find((b) => b.battery_id === 'pack-1')!;
        assert.deepEqual(pack1.counts, { 'battery-data': 2, 'battery-performance': 1, 'battery-prediction': 0 });
        assert.equal(pack1.last_seen, NOW + 7);
        assert.equal(pack1.last_seen_by_kind['battery-data'], NOW + 3);
      }));

    it('retention removes only records older than the cutoff and keeps counts right', () =>
      withStore(options, async (store) => {
        await writeOk(store, 'battery-data', [data(NOW - 7200), data(NOW - 3601), data(NOW), data(NOW + 1, 'pack-2')]);
        await writeOk(store, 'battery-performance', [performance(NOW - 7200, 'pack-3')]);
        const deleted = await store.deleteOlderThan(NOW - 3600);
        assert.equal(deleted, 3);
        const left = await store.history('battery-data', { since: 0, limit: 10 });
        assert.deepEqual(left.map((r) => r.timestamp), [NOW + 1, NOW]);
        const batteries = await store.batteries();
        assert.deepEqual(batteries.map((b) => b.battery_id).sort(), ['pack-1', 'pack-2']);
        assert.equal(batteries.find((b) => b.battery_id === 'pack-1')?.counts['battery-data'], 1);
      }));

    it('exports a range oldest first, across pages, filtered by pack', () =>
      withStore(options, async (store) => {
        const records = Array.from({ length: 2500 }, (_, i) => data(NOW + Math.floor(i / 2), i % 5 === 0 ? 'pack-2' : 'pack-1', i));
        await writeOk(store, 'battery-data', records);
        const exported = [];
        for await (const record of store.exportRange('battery-data', { from: NOW + 10, to: NOW + 1000, batteryId: 'pack-1' })) {
          exported.push(record);
        }
        const expected = records.filter((r) => r.battery_id === 'pack-1' && r.timestamp! >= NOW + 10 && r.timestamp! < NOW + 1000);
        assert.equal(exported.length, expected.length);
        assert.deepEqual(exported.map((r) => r.pack_voltage), expected.map((r) => r.pack_voltage));
      }));

    it('aggregates into buckets equal to the raw computation, at every width', () =>
      withStore(options, async (store) => {
        // 3 hours of one reading every 7 s for two packs, with values that vary.
        const start = NOW - (NOW % 3600);
        const records: TestRecord[] = [];
        for (let t = start; t < start + 3 * 3600; t += 7) {
          records.push(data(t, 'pack-1', 350 + ((t * 13) % 97) / 4));
          records.push(data(t + 3, 'pack-2', 300 + ((t * 7) % 89) / 8));
        }
        await writeOk(store, 'battery-data', records);
        for (const buckets of [2, 3, 7, 100, 500, 2000]) {
          for (const batteryId of ['pack-1', undefined]) {
            const plan = planBuckets(start + 100, start + 3 * 3600, buckets);
            const answer = await store.aggregate('battery-data', { ...plan, batteryId });
            const expected = rawAggregate(records, plan.from, plan.to, plan.bucketSeconds, batteryId);
            assert.ok(answer.length <= 2000);
            assert.equal(answer.length, expected.length, `buckets=${buckets}`);
            answer.forEach((bucket, i) => {
              const want = expected[i]!;
              assert.equal(bucket.start, want.start);
              assert.equal(bucket.count, want.count);
              assert.equal(bucket.min.pack_voltage, want.min);
              assert.equal(bucket.max.pack_voltage, want.max);
              assert.ok(Math.abs(bucket.mean.pack_voltage! - want.mean) < 1e-9, `mean ${bucket.mean.pack_voltage} vs ${want.mean}`);
            });
          }
        }
      }));

    it('aggregates the largest measurements the API takes into finite figures, raw and from rollups', () =>
      withStore(options, async (store) => {
        // ±MAX_MEASUREMENT is the API's bound (schemas.ts): sums of such values stay finite, so the
        // aggregate answer never holds an Infinity that JSON would turn into null.
        const extreme = [MAX_MEASUREMENT, MAX_MEASUREMENT, MAX_MEASUREMENT, -MAX_MEASUREMENT];
        // In two writes, so that stores keeping rollups add a stored sum to a new one.
        await writeOk(store, 'battery-data', extreme.slice(0, 2).map((v, i) => data(NOW + i, 'pack-x', v, { pack_current: v })));
        await writeOk(store, 'battery-data', extreme.slice(2).map((v, i) => data(NOW + 2 + i, 'pack-x', v, { pack_current: -v })));
        for (const [from, to] of [[NOW - 60, NOW + 60], [NOW - 86_400, NOW + 86_400]] as const) {
          const buckets = await store.aggregate('battery-data', { ...planBuckets(from, to, 10), batteryId: 'pack-x' });
          assert.equal(buckets.reduce((n, b) => n + b.count, 0), 4);
          for (const bucket of buckets) {
            for (const stats of [bucket.min, bucket.max, bucket.mean]) {
              for (const field of ['pack_voltage', 'pack_current', 'cell_temp']) assert.ok(Number.isFinite(stats[field]), `${field}: ${stats[field]}`);
            }
          }
        }
      }));

    it('aggregates one stored row into one bucket and an empty range into none', () =>
      withStore(options, async (store) => {
        await writeOk(store, 'battery-data', [data(NOW + 30, 'pack-1', 401.5)]);
        const plan = planBuckets(NOW - 3600, NOW + 3600, 1000);
        const [only, ...rest] = await store.aggregate('battery-data', plan);
        assert.deepEqual(rest, []);
        assert.equal(only?.count, 1);
        assert.equal(only?.min.pack_voltage, 401.5);
        assert.equal(only?.mean.pack_voltage, 401.5);
        assert.ok(only!.start <= NOW + 30 && NOW + 30 < only!.start + plan.bucketSeconds);
        assert.deepEqual(await store.aggregate('battery-data', planBuckets(NOW + 7200, NOW + 9000, 10)), []);
      }));

    it('stores per-cell readings as sent, derives min, max, delta and the hottest cell, and leaves records without cells as they were', () =>
      withStore(options, async (store) => {
        // Doubles that a decimal round trip could change, and the largest array the API takes.
        const voltages = [3.7000000000000006, 3.712, 3.1, 4.2, 3.699, 1e-7];
        const temps = [25.5, -3.25, 31.125];
        const many = Array.from({ length: 1024 }, (_, i) => 3.6 + ((i * 37) % 101) / 1000);
        const records = [
          data(NOW, 'cells-1', 400, { cell_voltages: voltages, cell_temps: temps }),
          data(NOW + 1, 'cells-1', 401, { cell_voltages: [3.3] }),
          data(NOW + 2, 'cells-1', 402),
          // An empty array is taken as absent: nothing to derive from.
          data(NOW + 3, 'cells-1', 403, { cell_voltages: [], cell_temps: [] }),
          data(NOW + 4, 'cells-1', 404, { cell_temps: many }),
        ];
        const ids = await writeOk(store, 'battery-data', records);
        const common = (i: number) => ({
          _id: ids[i],
          timestamp: NOW + i,
          received_at: RECEIVED_AT,
          source: 'battery_monitor',
          battery_id: 'cells-1',
          pack_voltage: 400 + i,
          pack_current: -10,
          cell_temp: 25,
        });
        const expected = [
          {
            ...common(0),
            cell_voltages: voltages,
            cell_temps: temps,
            cell_voltage_min: 1e-7,
            cell_voltage_max: 4.2,
            cell_voltage_delta: 4.2 - 1e-7,
            cell_temp_max: 31.125,
          },
          { ...common(1), cell_voltages: [3.3], cell_voltage_min: 3.3, cell_voltage_max: 3.3, cell_voltage_delta: 0 },
          common(2),
          common(3),
          { ...common(4), cell_temps: many, cell_temp_max: Math.max(...many) },
        ];
        const history = (await store.history('battery-data', { since: 0, limit: 10, batteryId: 'cells-1' })).reverse();
        assert.deepEqual(history, expected);
        // Fields in the table's order; a record without cells has exactly the fields it had before cells existed.
        for (const record of history) assert.deepEqual(Object.keys(record), csvColumns('battery-data').filter((name) => name in record));
        assert.deepEqual(Object.keys(history[2]!), ['_id', 'timestamp', 'received_at', 'source', 'battery_id', 'pack_voltage', 'pack_current', 'cell_temp']);
        const exported = [];
        for await (const record of store.exportRange('battery-data', { from: NOW, to: NOW + 10, batteryId: 'cells-1' })) exported.push(record);
        assert.deepEqual(exported, expected);
        assert.deepEqual(await store.latest('battery-data', 'cells-1'), expected[4]);
        await writeOk(store, 'battery-data', [data(NOW + 5, 'cells-1', 405, { cell_voltages: voltages })]);
        assert.equal((await store.latest('battery-data', 'cells-1'))?.cell_voltage_delta, 4.2 - 1e-7);
      }));

    it('aggregates the derived numbers over the records that have them, from rollups and raw rows alike', () =>
      withStore(options, async (store) => {
        // 2 hours of one reading every 20 s; every third carries cells, the others none. Written in two
        // interleaved halves, so that a rollup bucket stored with or without cells gains the other.
        const start = NOW - (NOW % 3600);
        const records: TestRecord[] = [];
        for (let i = 0; start + i * 20 < start + 2 * 3600; i++) {
          const t = start + i * 20;
          const cells = i % 3 === 0 ? { cell_voltages: [3.6, 3.6 + (i % 11) / 1000, 3.59 - (i % 7) / 1000], cell_temps: [20 + (i % 13)] } : {};
          records.push(data(t, 'pack-1', 390 + (i % 17), cells));
        }
        await writeOk(store, 'battery-data', records.filter((_, i) => i % 2 === 0));
        await writeOk(store, 'battery-data', records.filter((_, i) => i % 2 === 1));
        const derived = records.map((record) => ({ ...record, ...expectedDerived(record) }));
        for (const buckets of [1, 2, 7, 100, 2000]) {
          const plan = planBuckets(start, start + 2 * 3600, buckets);
          for (const source of [undefined, 'battery_monitor']) {
            const answer = await store.aggregate('battery-data', { ...plan, batteryId: 'pack-1', source });
            const all = rawAggregate(derived, plan.from, plan.to, plan.bucketSeconds, 'pack-1');
            assert.equal(answer.length, all.length, `buckets=${buckets}`);
            for (const field of ['cell_voltage_min', 'cell_voltage_max', 'cell_voltage_delta', 'cell_temp_max']) {
              const expected = new Map(rawAggregate(derived, plan.from, plan.to, plan.bucketSeconds, 'pack-1', field).map((b) => [b.start, b]));
              for (const bucket of answer) {
                const want = expected.get(bucket.start);
                const what = `buckets=${buckets} source=${source} ${field} at ${bucket.start}`;
                if (want === undefined) {
                  assert.equal(field in bucket.min || field in bucket.max || field in bucket.mean, false, `${what}: no record with cells`);
                  continue;
                }
                assert.equal(bucket.min[field], want.min, what);
                assert.equal(bucket.max[field], want.max, what);
                assert.ok(Math.abs(bucket.mean[field]! - want.mean) < 1e-9, `${what}: mean ${bucket.mean[field]} vs ${want.mean}`);
              }
            }
            answer.forEach((bucket, i) => assert.equal(bucket.count, all[i]!.count, 'every record counts, with cells or not'));
          }
        }
      }));

    it('filters latest, history, export and aggregates by source', () =>
      withStore(options, async (store) => {
        const analytics = 'battery_monitor_analytics';
        const at = (t: number, battery_id: string, source?: string) => ({ ...performance(t, battery_id), ...(source === undefined ? {} : { source }) });
        await writeOk(store, 'battery-performance', [
          at(NOW, 'pack-1', analytics),
          at(NOW + 1, 'pack-1', 'outside-predictor'),
          at(NOW + 2, 'pack-1', analytics),
          at(NOW + 3, 'pack-1', 'outside-predictor'),
          at(NOW + 4, 'pack-2'),
        ]);
        const latest = async (batteryId: string | undefined, source: string) => {
          const record = await store.latest('battery-performance', batteryId, source);
          return record === null ? null : [record.timestamp, record.source];
        };
        assert.deepEqual(await latest(undefined, analytics), [NOW + 2, analytics]);
        assert.deepEqual(await latest('pack-1', 'outside-predictor'), [NOW + 3, 'outside-predictor']);
        assert.deepEqual(await latest(undefined, 'battery_ai_predictor'), [NOW + 4, 'battery_ai_predictor']);
        assert.equal(await latest('pack-1', 'battery_ai_predictor'), null);
        assert.equal(await latest(undefined, 'nobody'), null);
        const history = await store.history('battery-performance', { since: 0, limit: 10, source: analytics });
        assert.deepEqual(history.map((r) => r.timestamp), [NOW + 2, NOW]);
        const ofPack = await store.history('battery-performance', { since: 0, limit: 10, batteryId: 'pack-1', source: 'outside-predictor' });
        assert.deepEqual(ofPack.map((r) => r.timestamp), [NOW + 3, NOW + 1]);
        const exported = [];
        for await (const record of store.exportRange('battery-performance', { from: 0, to: NOW + 10, source: analytics })) exported.push(record.timestamp);
        assert.deepEqual(exported, [NOW, NOW + 2]);
        for (const plan of [planBuckets(NOW - 60, NOW + 60, 1), planBuckets(NOW - 3600, NOW + 3600, 1)]) {
          const buckets = await store.aggregate('battery-performance', { ...plan, source: analytics });
          assert.deepEqual(buckets.map((b) => b.count), [2]);
          assert.deepEqual((await store.aggregate('battery-performance', plan)).map((b) => b.count), [5]);
        }
      }));

    if (options.atomicRequests) {
      it('fails a request as a whole and spares the others in the same write', () =>
        withStore(options, async (store) => {
          // A record without its fields gets past no validator; here it stands for a failing insert.
          const outcomes = await store.write([
            batchOf('battery-data', [data(NOW + 2)]),
            batchOf('battery-performance', [performance(NOW), { timestamp: NOW, battery_id: 'pack-1' }]),
          ]);
          assert.equal(outcomes[0]?.ok, true);
          assert.equal(outcomes[1]?.ok, false);
          assert.equal((await store.history('battery-data', { since: 0, limit: 10 })).length, 1);
          assert.equal(await store.latest('battery-performance'), null);
          assert.deepEqual((await store.batteries()).map((b) => b.counts['battery-performance']), [0]);
        }));
    }
  });
}

/** Buckets of one field worked out from the records themselves; records without the field are passed over. */
function rawAggregate(records: TestRecord[], from: number, to: number, width: number, batteryId?: string, field = 'pack_voltage') {
  const buckets = new Map<number, { start: number; count: number; min: number; max: number; sum: number }>();
  for (const r of records) {
    const timestamp = r.timestamp!;
    if (timestamp < from || timestamp >= to) continue;
    if (batteryId !== undefined && r.battery_id !== batteryId) continue;
    if (typeof r[field] !== 'number') continue;
    const start = from + Math.floor((timestamp - from) / width) * width;
    const v = r[field] as number;
    const b = buckets.get(start) ?? { start, count: 0, min: Infinity, max: -Infinity, sum: 0 };
    b.count++;
    b.min = Math.min(b.min, v);
    b.max = Math.max(b.max, v);
    b.sum += v;
    buckets.set(start, b);
  }
  return [...buckets.values()].sort((a, b) => a.start - b.start).map((b) => ({ ...b, mean: b.sum / b.count }));
}
