/**
 * Aggregate benchmark (issue 5): 30 days of 1 Hz battery data for one pack (2,592,000 rows) into
 * 1,000 buckets. Target: p50 under 100 ms on SQLite.
 *
 * The store is filled through store.write in 50,000-row batches, so the per-minute and per-hour
 * rollups are built exactly as at ingest. Then, in the same run and on the same file:
 *   - store.aggregate (the rollups), in this process, many runs;
 *   - GET /api/battery-data/aggregate?hours=720&buckets=1000&battery_id=pack-1 against the service
 *     spawned as a child (`serve`), sequential requests;
 *   - the raw GROUP BY over the raw rows (better-sqlite3 on the file, the same buckets), a few runs;
 *   - the rollup answer and the HTTP answer compared with the raw computation: counts, min and max
 *     exactly, mean within 1e-9 relative.
 * With --mongodb it also fills a MongoDB-wire server (startMongoServer: mongod, or FerretDB) with
 * the newest --mongo-rows rows of the same series and times store.aggregate and the HTTP route there.
 * Prints the figures and writes bench/results/aggregate.json.
 *
 *   node --import tsx bench/aggregate.ts [--rows 2592000] [--runs 100] [--raw-runs 3]
 *                                        [--mongodb] [--mongo-rows 50000] [--mongo-runs 5]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { RecordBatch } from '../src/ingest/record-batch.js';
import { planBuckets, type BucketPlan } from '../src/store/buckets.js';
import { openMongoStore } from '../src/store/mongodb-store.js';
import { SQLITE_FILE_NAME, openSqliteStore } from '../src/store/sqlite-store.js';
import type { AggregateBucket, Store } from '../src/store/store.js';
import { spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: String(30 * 86_400) },
    runs: { type: 'string', default: '100' },
    'raw-runs': { type: 'string', default: '3' },
    mongodb: { type: 'boolean', default: false },
    'mongo-rows': { type: 'string', default: '50000' },
    'mongo-runs': { type: 'string', default: '5' },
  },
});
const ROWS = Number(values.rows);
const RUNS = Number(values.runs);
const RAW_RUNS = Number(values['raw-runs']);
const MONGO_ROWS = Math.min(Number(values['mongo-rows']), ROWS);
const MONGO_RUNS = Number(values['mongo-runs']);
const DAYS = 30;
const RANGE_SECONDS = DAYS * 86_400;
const BUCKETS = 1000;
const PACK = 'pack-1';
const BATCH = 50_000;
const FIELDS = ['pack_voltage', 'pack_current', 'cell_temp'] as const;
const CLI = new URL('../src/cli/main.ts', import.meta.url).pathname;
const QUERY = `/api/battery-data/aggregate?hours=${DAYS * 24}&buckets=${BUCKETS}&battery_id=${PACK}`;

function line(label: string, figures: object): void {
  console.log(`${label.padEnd(48)} ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join('  ')}`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Timing {
  runs: number;
  first_ms: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** One untimed-in-the-percentiles first run (cold statement, cold cache), then `runs` timed runs. */
async function time<T>(runs: number, run: () => Promise<T> | T): Promise<{ timing: Timing; last: T }> {
  let began = performance.now();
  let last = await run();
  const first = performance.now() - began;
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    began = performance.now();
    last = await run();
    samples.push(performance.now() - began);
  }
  samples.sort((a, b) => a - b);
  const round = (ms: number) => +ms.toFixed(2);
  return {
    timing: { runs, first_ms: round(first), p50_ms: round(percentile(samples, 50)), p99_ms: round(percentile(samples, 99)), max_ms: round(samples.at(-1) ?? NaN) },
    last,
  };
}

/** A deterministic pack: daily voltage and temperature swings, hourly current cycles, noise. */
function series(end: number, total: number) {
  const t0 = end - total; // one reading a second, the newest just before `end`
  return {
    t0,
    batch(start: number, stop: number): RecordBatch {
      const records = new RecordBatch('battery-data', stop - start);
      for (let i = start; i < stop; i++) {
        const noise = (k: number) => {
          // mulberry32 on (i, k): the same value whoever asks, whatever the batching.
          let a = (i * 3 + k + 0x6d2b79f5) | 0;
          a = Math.imul(a ^ (a >>> 15), a | 1);
          a ^= a + Math.imul(a ^ (a >>> 7), a | 61);
          return ((a ^ (a >>> 14)) >>> 0) / 4294967296 - 0.5;
        };
        const timestamp = t0 + i;
        records.append(
          {
            timestamp,
            battery_id: PACK,
            pack_voltage: 385 + 15 * Math.sin((2 * Math.PI * i) / 86_400) + noise(0),
            pack_current: 20 + 60 * Math.sin((2 * Math.PI * i) / 3_517) + 4 * noise(1),
            cell_temp: 28 + 6 * Math.sin((2 * Math.PI * i) / 86_400 + 1) + 0.2 * noise(2),
          },
          timestamp,
        );
      }
      return records;
    },
  };
}

async function fill(store: Store, data: ReturnType<typeof series>, start: number, stop: number): Promise<{ seconds: number; rows_per_s: number }> {
  const began = performance.now();
  for (let at = start; at < stop; at += BATCH) {
    const [outcome] = await store.write([data.batch(at, Math.min(stop, at + BATCH))]);
    if (!outcome?.ok) throw new Error(`fill failed: ${outcome?.error.message}`);
  }
  const seconds = (performance.now() - began) / 1000;
  return { seconds: +seconds.toFixed(1), rows_per_s: Math.round((stop - start) / seconds) };
}

/** The raw computation: the same buckets from the raw table, as one GROUP BY. */
function rawAggregate(db: Database.Database, plan: BucketPlan, minTimestamp = -Infinity): AggregateBucket[] {
  const stats = FIELDS.map((f) => `min(${f}) AS min_${f}, max(${f}) AS max_${f}, sum(${f}) AS sum_${f}`).join(', ');
  const rows = db
    .prepare(
      `SELECT @from + CAST((timestamp - @from) / @width AS INTEGER) * @width AS start, count(*) AS count, ${stats}
       FROM battery_data WHERE battery_id = @pack AND timestamp >= @from AND timestamp < @to AND timestamp >= @min
       GROUP BY start ORDER BY start`,
    )
    .all({ from: plan.from, to: plan.to, width: plan.bucketSeconds, pack: PACK, min: Number.isFinite(minTimestamp) ? minTimestamp : -1e300 }) as Record<string, number>[];
  return rows.map((row) => {
    const bucket: AggregateBucket = { start: row.start!, count: row.count!, min: {}, max: {}, mean: {} };
    for (const f of FIELDS) {
      bucket.min[f] = row[`min_${f}`]!;
      bucket.max[f] = row[`max_${f}`]!;
      bucket.mean[f] = row[`sum_${f}`]! / row.count!;
    }
    return bucket;
  });
}

interface Comparison {
  equal: boolean;
  buckets: number;
  rows: number;
  max_mean_relative_error: number;
  first_difference?: string;
}

function compare(answer: AggregateBucket[], raw: AggregateBucket[]): Comparison {
  let difference: string | undefined;
  let worst = 0;
  if (answer.length !== raw.length) difference = `${answer.length} buckets against ${raw.length} raw`;
  for (let i = 0; i < Math.min(answer.length, raw.length); i++) {
    const a = answer[i]!;
    const r = raw[i]!;
    if (a.start !== r.start || a.count !== r.count) difference ??= `bucket ${i}: start ${a.start}/${r.start}, count ${a.count}/${r.count}`;
    for (const f of FIELDS) {
      if (a.min[f] !== r.min[f] || a.max[f] !== r.max[f]) difference ??= `bucket ${i} ${f}: min ${a.min[f]}/${r.min[f]}, max ${a.max[f]}/${r.max[f]}`;
      const error = Math.abs(a.mean[f]! - r.mean[f]!) / Math.max(Math.abs(a.mean[f]!), Math.abs(r.mean[f]!), Number.MIN_VALUE);
      worst = Math.max(worst, error);
      if (!(error <= 1e-9)) difference ??= `bucket ${i} ${f}: mean ${a.mean[f]}/${r.mean[f]}`;
    }
  }
  const comparison: Comparison = {
    equal: difference === undefined,
    buckets: raw.length,
    rows: raw.reduce((sum, b) => sum + b.count, 0),
    max_mean_relative_error: Number(worst.toExponential(2)),
  };
  if (difference !== undefined) comparison.first_difference = difference;
  return comparison;
}

function printComparison(label: string, c: Comparison): void {
  line(label, { equal: c.equal ? 'yes' : 'no', buckets: c.buckets, rows: c.rows, max_mean_rel_err: c.max_mean_relative_error });
  if (c.first_difference !== undefined) console.log(`  first difference: ${c.first_difference}`);
}

interface HttpAnswer {
  bucket_seconds: number;
  from: number;
  to: number;
  buckets: AggregateBucket[];
}

/** Sequential GETs; each timed until the whole body is in (parsing it is the client's cost, not timed). */
async function timeHttp(url: string, runs: number): Promise<{ timing: Timing; answer: HttpAnswer; bytes: number }> {
  const { timing, last } = await time(runs, async () => {
    const response = await fetch(`${url}${QUERY}`);
    const body = await response.text();
    if (response.status !== 200) throw new Error(`GET ${QUERY}: ${response.status} ${body.slice(0, 200)}`);
    return body;
  });
  return { timing, answer: JSON.parse(last) as HttpAnswer, bytes: Buffer.byteLength(last) };
}

const results: Record<string, unknown> = { rows: ROWS, range_days: DAYS, buckets_asked: BUCKETS, battery_id: PACK };
const end = Date.now() / 1000;
const data = series(end, ROWS);
console.log(`aggregate benchmark: ${ROWS} rows of 1 Hz battery-data for ${PACK}, ${(ROWS / 86_400).toFixed(2)} days ending now; ${BUCKETS} buckets over ${DAYS} days\n`);
if (ROWS < RANGE_SECONDS) console.log(`(quick run: --rows ${ROWS} is fewer than 30 days of 1 Hz data; the query still spans 30 days)\n`);

// SQLite: fill, then the rollups in-process, the raw GROUP BY, then the route in a child process.
{
  const dataDir = mkdtempSync(path.join(tmpdir(), 'battery-bench-aggregate-'));
  try {
    const store = await openSqliteStore(dataDir);
    const filled = await fill(store, data, 0, ROWS);
    const file = path.join(dataDir, SQLITE_FILE_NAME);
    const db = new Database(file, { readonly: true });
    db.pragma('cache_size = -65536'); // as the store's reading connection
    const rollupRows = Object.fromEntries(
      ['battery_data_rollup_60', 'battery_data_rollup_3600'].map((table) => [table, db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number]),
    );
    const sizeMiB = +((statSync(file).size + (statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0)) / 2 ** 20).toFixed(1);
    line(`SQLite fill: ${ROWS} rows through store.write (${BATCH}/batch)`, { ...filled, file_mib: sizeMiB });
    line('  rollup rows', rollupRows);

    const plan = planBuckets(Date.now() / 1000 - RANGE_SECONDS, Date.now() / 1000, BUCKETS);
    const query = { ...plan, batteryId: PACK };
    const rollup = await time(RUNS, () => store.aggregate('battery-data', query));
    line(`store.aggregate, rollups (bucket ${plan.bucketSeconds} s)`, { ...rollup.timing, buckets: rollup.last.length });
    const raw = await time(RAW_RUNS, () => rawAggregate(db, plan));
    line('raw GROUP BY over raw rows (better-sqlite3)', { ...raw.timing, buckets: raw.last.length });
    const equal = compare(rollup.last, raw.last);
    printComparison('rollup answer against raw computation', equal);
    await store.close();

    // The route, served by the CLI in its own process on the same file.
    const service = await spawnServer(CLI, ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0' });
    let http;
    try {
      http = await timeHttp(service.url, RUNS);
    } finally {
      await service.stop();
    }
    line(`GET ${QUERY} (sequential)`, { ...http.timing, buckets: http.answer.buckets.length, response_kib: +(http.bytes / 1024).toFixed(1) });
    const httpEqual = compare(http.answer.buckets, rawAggregate(db, { bucketSeconds: http.answer.bucket_seconds, from: http.answer.from, to: http.answer.to }));
    printComparison('HTTP answer against raw computation', httpEqual);
    db.close();

    const target = rollup.timing.p50_ms < 100;
    line('target: store.aggregate p50 < 100 ms', { met: target ? 'yes' : 'no', http_met: http.timing.p50_ms < 100 ? 'yes' : 'no' });
    console.log(`equal: ${equal.equal && httpEqual.equal ? 'yes' : 'no'}`);
    results.sqlite = {
      fill: { ...filled, file_mib: sizeMiB, rollup_rows: rollupRows },
      bucket_seconds: plan.bucketSeconds,
      store_aggregate: { ...rollup.timing, buckets: rollup.last.length },
      raw_group_by: { ...raw.timing, buckets: raw.last.length },
      http_aggregate: { query: QUERY, ...http.timing, buckets: http.answer.buckets.length, response_bytes: http.bytes },
      speedup_p50: +(raw.timing.p50_ms / rollup.timing.p50_ms).toFixed(1),
      rollup_equals_raw: equal,
      http_equals_raw: httpEqual,
      target_p50_under_100_ms: target,
    };

    // MongoDB: the newest MONGO_ROWS rows of the same series; compared with the raw GROUP BY over the same rows.
    if (values.mongodb) {
      const { startMongoServer } = await import('../test/support/mongo-server.js');
      console.log('');
      const server = await startMongoServer();
      const databaseName = `bench_aggregate_${process.pid}`;
      try {
        const notes: string[] = [];
        const logger = { info: (message: string) => notes.push(message), warn: (message: string) => notes.push(message) };
        const mongo = await openMongoStore({ uri: server.uri, databaseName, retentionDays: 0, logger });
        const health = await mongo.health();
        const mongoFill = await fill(mongo, data, ROWS - MONGO_ROWS, ROWS);
        line(`MongoDB fill (${server.description}, ${health.mode ?? '?'}): ${MONGO_ROWS} rows`, mongoFill);
        const mongoPlan = planBuckets(Date.now() / 1000 - RANGE_SECONDS, Date.now() / 1000, BUCKETS);
        const mongoQuery = { ...mongoPlan, batteryId: PACK };
        const mongoAggregate = await time(MONGO_RUNS, () => mongo.aggregate('battery-data', mongoQuery));
        // The store says at set-up whether the server takes the $group stage or it reduces a cursor itself.
        const how = notes.some((note) => note.includes('lacks $group')) ? 'cursor reduced in the store' : 'server $group pipeline';
        const usPerRow = +((mongoAggregate.timing.p50_ms * 1000) / MONGO_ROWS).toFixed(1);
        line(`MongoDB store.aggregate (${how})`, { ...mongoAggregate.timing, buckets: mongoAggregate.last.length, us_per_row: usPerRow });
        const db2 = new Database(file, { readonly: true });
        const mongoEqual = compare(mongoAggregate.last, rawAggregate(db2, mongoPlan, data.t0 + (ROWS - MONGO_ROWS)));
        printComparison('MongoDB answer against raw computation (same rows)', mongoEqual);
        await mongo.close();
        const mongoService = await spawnServer(CLI, ['serve'], { MONGODB_URI: server.uri, DATABASE_NAME: databaseName, RETENTION_DAYS: '0', DATA_DIR: dataDir });
        let mongoHttp;
        try {
          mongoHttp = await timeHttp(mongoService.url, MONGO_RUNS);
        } finally {
          await mongoService.stop();
        }
        line(`MongoDB GET ${QUERY} (sequential)`, { ...mongoHttp.timing, buckets: mongoHttp.answer.buckets.length });
        const mongoHttpEqual = compare(
          mongoHttp.answer.buckets,
          rawAggregate(db2, { bucketSeconds: mongoHttp.answer.bucket_seconds, from: mongoHttp.answer.from, to: mongoHttp.answer.to }, data.t0 + (ROWS - MONGO_ROWS)),
        );
        printComparison('MongoDB HTTP answer against raw computation', mongoHttpEqual);
        db2.close();
        console.log(`MongoDB: ${MONGO_ROWS} rows, not ${ROWS} (--mongo-rows): its aggregate reads the raw documents (no rollups)`);
        results.mongodb = {
          server: server.description,
          mode: health.mode,
          rows: MONGO_ROWS,
          fill: mongoFill,
          aggregation: how,
          store_aggregate: { ...mongoAggregate.timing, buckets: mongoAggregate.last.length, us_per_row: usPerRow },
          http_aggregate: { ...mongoHttp.timing, buckets: mongoHttp.answer.buckets.length },
          equals_raw: mongoEqual,
          http_equals_raw: mongoHttpEqual,
        };
      } finally {
        await server.stop();
      }
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

writeResults('aggregate', results);
