/**
 * API benchmark: single POSTs and batched POSTs against the real service (SQLite store), and
 * latest/history at 1,000,000 stored rows; each beside its ceiling measured in the same run:
 * the same route and validation with no store, and raw better-sqlite3 inserts of the same rows in
 * 1,000-row transactions. Prints the figures and writes bench/results/api.json.
 *
 * With MongoDB in --stores, the same runs again on a MongoDB-wire server (MONGODB_TEST_URI, mongod, or
 * FerretDB as the tests start it), side by side.
 *
 *   node --import tsx bench/api.ts [--seconds 10] [--rows 1000000] [--mongodb-rows 100000] [--stores sqlite,mongodb]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { toNewRecord, type NewRecord } from '../src/records/kinds.js';
import { openStore } from '../src/store/open-store.js';
import { startMongoServer, type MongoTestServer } from '../test/support/mongo-server.js';
import { load, rawInsertCeiling, spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rows: { type: 'string', default: '1000000' },
    'mongodb-rows': { type: 'string', default: '100000' },
    stores: { type: 'string', default: 'sqlite,mongodb' },
  },
});
const seconds = Number(values.seconds);
const CLI = new URL('../src/cli.ts', import.meta.url).pathname;
const NO_STORE = new URL('./servers/no-store-server.ts', import.meta.url).pathname;

const reading = (i: number) => ({ pack_voltage: 380 + (i % 40), pack_current: -12.5 + (i % 7), cell_temp: 25 + (i % 11) / 2, battery_id: `pack-${i % 10}` });
const singleBody = JSON.stringify(reading(1));
const batchBody = JSON.stringify(Array.from({ length: 1000 }, (_, i) => reading(i)));

const made: string[] = [];
process.on('exit', () => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'battery-bench-'));
  made.push(dir);
  return dir;
}


async function prefill(target: Target, total: number): Promise<void> {
  const store = await openStore({ ...target, retentionDays: 0 }, { info() {}, warn() {} });
  const now = Date.now() / 1000;
  for (let start = 0; start < total; start += 50_000) {
    const records: NewRecord[] = [];
    for (let i = start; i < Math.min(total, start + 50_000); i++) {
      // One reading a second per pack, ten packs, ending now.
      records.push(toNewRecord('battery-data', { ...reading(i), timestamp: now - (total - i) / 10 }, now));
    }
    const [outcome] = await store.write([{ kind: 'battery-data', records }]);
    if (!outcome?.ok) throw new Error('prefill failed');
  }
  await store.close();
}

function line(label: string, figures: object): void {
  console.log(`${label.padEnd(44)} ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join('  ')}`);
}

interface Target {
  dataDir: string;
  mongodbUri: string | undefined;
  databaseName: string;
}

let mongo: MongoTestServer | undefined;
let runs = 0;
/** A fresh, empty store of the kind asked for. */
function newTarget(store: string): Target {
  runs++;
  return { dataDir: tempDir(), mongodbUri: store === 'mongodb' ? mongo!.uri : undefined, databaseName: `bench_${process.pid}_${runs}` };
}

function serviceEnv(target: Target): Record<string, string> {
  const env: Record<string, string> = { DATA_DIR: target.dataDir, RETENTION_DAYS: '0', LOG_LEVEL: 'info', DATABASE_NAME: target.databaseName };
  if (target.mongodbUri !== undefined) env.MONGODB_URI = target.mongodbUri;
  return env;
}

const post = { method: 'POST' as const, headers: { 'content-type': 'application/json' } };

async function ceilings() {
  const ceilingServer = await spawnServer(NO_STORE, []);
  const singlePost = await load({ url: `${ceilingServer.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
  await ceilingServer.stop();
  line('single POST, no-store ceiling (50 conns)', singlePost);
  const rawInsert = rawInsertCeiling(200_000);
  line('raw better-sqlite3, 1,000-row transactions', { rows_per_s: rawInsert });
  return { single_post_no_store: singlePost, raw_insert_rows_per_s: rawInsert };
}

async function measureStore(store: string, ceiling: Awaited<ReturnType<typeof ceilings>>) {
  const results: Record<string, unknown> = {};
  console.log(`\n== ${store}${store === 'mongodb' ? ` (${mongo!.description})` : ''}`);
  {
    const target = newTarget(store);
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    const single = await load({ url: `${service.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
    await service.stop();
    const ratio = +(single.requests_per_s / ceiling.single_post_no_store.requests_per_s).toFixed(3);
    results.single_post = { ...single, ratio_to_no_store: ratio };
    line('single POST (50 conns)', { ...single, ratio });
  }
  {
    const target = newTarget(store);
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    const batched = await load({ url: `${service.url}/api/battery-data`, ...post, body: batchBody, connections: 8, duration: seconds });
    await service.stop();
    const recordsPerSecond = batched.requests_per_s * 1000;
    const ratio = +(recordsPerSecond / ceiling.raw_insert_rows_per_s).toFixed(3);
    results.batched_post = { records_per_s: recordsPerSecond, p50_ms: batched.p50_ms, p99_ms: batched.p99_ms, errors: batched.errors, non2xx: batched.non2xx, ratio_to_raw_insert: ratio };
    line('batched POST, 1,000 records (8 conns)', { records_per_s: recordsPerSecond, p50_ms: batched.p50_ms, p99_ms: batched.p99_ms, errors: batched.errors, ratio });
  }
  {
    const rows = Number(store === 'mongodb' ? values['mongodb-rows'] : values.rows);
    const target = newTarget(store);
    const began = performance.now();
    await prefill(target, rows);
    line(`prefilled ${rows} rows`, { seconds: ((performance.now() - began) / 1000).toFixed(1) });
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    const reads: Record<string, unknown> = { rows };
    for (const [label, query] of [
      ['latest', '/api/battery-data/latest'],
      ['latest?battery_id', '/api/battery-data/latest?battery_id=pack-3'],
      ['history limit=100', '/api/battery-data/history?limit=100'],
      ['history?battery_id limit=100', '/api/battery-data/history?limit=100&battery_id=pack-3'],
    ] as const) {
      // Latency one request at a time, then throughput with 10 connections.
      const alone = await load({ url: `${service.url}${query}`, connections: 1, duration: Math.max(3, seconds / 2) });
      const loaded = await load({ url: `${service.url}${query}`, connections: 10, duration: Math.max(3, seconds / 2) });
      reads[label] = { one_connection: alone, ten_connections: loaded };
      line(`GET ${label} at ${rows} rows, 1 conn`, alone);
      line(`GET ${label} at ${rows} rows, 10 conns`, loaded);
    }
    await service.stop();
    results.reads = reads;
  }
  return results;
}

const stores = values.stores.split(',');
const ceiling = await ceilings();
const results: Record<string, unknown> = { ceilings: ceiling };
for (const store of stores) {
  if (store === 'mongodb') mongo = await startMongoServer();
  results[store] = await measureStore(store, ceiling);
}
await mongo?.stop();
writeResults('api', results);
