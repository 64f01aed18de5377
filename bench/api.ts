/**
 * API benchmark: single POSTs and batched POSTs against the real service (SQLite store), and
 * latest/history at 1,000,000 stored rows; each beside its ceiling measured in the same run:
 * the same route and validation with no store, and raw better-sqlite3 inserts of the same rows in
 * 1,000-row transactions. Prints the figures and writes bench/results/api.json.
 *
 * With MongoDB in --stores, the same runs again on a MongoDB-wire server (MONGODB_TEST_URI, mongod, or
 * FerretDB as the tests start it), side by side.
 *
 * One connection (issue 8): single POSTs one after another on one keep-alive connection, latency
 * of each timed here to the microsecond (autocannon rounds to whole milliseconds). On MongoDB its
 * ceiling is a raw driver insertOne round trip of the same document into a collection set up the
 * same way, from this process to the same server, in the same run: the cost of one write and
 * nothing else, which is what the original service paid per POST. Beside them, the same POSTs to
 * the no-store server: what HTTP alone costs. They alternate in rounds so that drift (the server's
 * files growing, other load on the machine) falls on all alike.
 * Target: POST p50 within 1.2x of the insertOne p50.
 *
 *   node --import tsx bench/api.ts [--seconds 10] [--rows 1000000] [--mongodb-rows 100000] [--stores sqlite,mongodb]
 *                                  [--parts concurrent,one-connection,batched,reads]
 * With only some --parts, the results go to bench/results/api-<parts>.json, leaving api.json whole.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { MongoClient, ObjectId } from 'mongodb';
import { RecordBatch } from '../src/ingest/record-batch.js';
import { toDocument } from '../src/store/mongodb-documents.js';
import { openMongoStore } from '../src/store/mongodb-store.js';
import { openStore } from '../src/store/open-store.js';
import { startMongoServer, type MongoTestServer } from '../test/support/mongo-server.js';
import { load, rawInsertCeiling, spawnServer, writeResults } from './support.js';

const PARTS = ['concurrent', 'one-connection', 'batched', 'reads'] as const;
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rows: { type: 'string', default: '1000000' },
    'mongodb-rows': { type: 'string', default: '100000' },
    stores: { type: 'string', default: 'sqlite,mongodb' },
    parts: { type: 'string', default: PARTS.join(',') },
  },
});
const seconds = Number(values.seconds);
const parts = new Set(values.parts.split(','));
for (const part of parts) if (!(PARTS as readonly string[]).includes(part)) throw new Error(`unknown part ${part}; parts: ${PARTS.join(', ')}`);
/** Rounds in which the one-connection operations take turns. */
const ROUNDS = 3;
const CLI = new URL('../src/cli/main.ts', import.meta.url).pathname;
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
    const batch = new RecordBatch('battery-data', 50_000);
    for (let i = start; i < Math.min(total, start + 50_000); i++) {
      // One reading a second per pack, ten packs, ending now.
      batch.append({ ...reading(i), timestamp: now - (total - i) / 10 }, now);
    }
    const [outcome] = await store.write([batch]);
    if (!outcome?.ok) throw new Error('prefill failed');
  }
  await store.close();
}

function line(label: string, figures: object): void {
  console.log(`${label.padEnd(44)} ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join('  ')}`);
}

/** Latency figures of sequential operations, in milliseconds to the microsecond. */
interface SequentialFigures {
  operations: number;
  per_s: number;
  p50_ms: number;
  p99_ms: number;
}

function sequentialFigures(samples: number[], elapsedMs: number): SequentialFigures {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number) => +(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN).toFixed(3);
  return { operations: samples.length, per_s: Math.round(samples.length / (elapsedMs / 1000)), p50_ms: at(0.5), p99_ms: at(0.99) };
}

/** Runs `operation` one at a time for `ms`, timing each; answers the samples and the time taken. */
async function sequentially(ms: number, operation: () => Promise<void>): Promise<{ samples: number[]; elapsedMs: number }> {
  const samples: number[] = [];
  const began = performance.now();
  const stop = began + ms;
  for (let now = began; now < stop; ) {
    await operation();
    const done = performance.now();
    samples.push(done - now);
    now = done;
  }
  return { samples, elapsedMs: performance.now() - began };
}

/** One keep-alive connection; POSTs `body` and reads the whole answer, failing on anything but 200. */
function poster(url: string, body: string): { post(): Promise<void>; close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const target = new URL('/api/battery-data', url);
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  return {
    post: () =>
      new Promise((resolve, reject) => {
        const request = http.request(target, { method: 'POST', agent, headers }, (response) => {
          response.resume();
          response.on('end', () => (response.statusCode === 200 ? resolve() : reject(new Error(`POST answered ${response.statusCode}`))));
        });
        request.on('error', reject);
        request.end(body);
      }),
    close: () => agent.destroy(),
  };
}

/**
 * Single POSTs on one connection against `service`, beside the same POSTs to the no-store server
 * (the HTTP floor: route and validation, no store) and, on MongoDB, raw insertOnes of the same
 * document on the same server; the three alternate in rounds. Answers each, and the ratio.
 */
async function oneConnection(store: string, service: { url: string }, target: Target) {
  const noStore = await spawnServer(NO_STORE, []);
  const clients = [poster(service.url, singleBody), poster(noStore.url, singleBody)];
  const operations: { label: string; run(): Promise<void>; samples: number[]; elapsedMs: number }[] = [
    { label: 'single POST, 1 connection', run: clients[0]!.post, samples: [], elapsedMs: 0 },
    { label: 'single POST, 1 connection, no-store server', run: clients[1]!.post, samples: [], elapsedMs: 0 },
  ];
  let driver: MongoClient | undefined;
  if (store === 'mongodb') {
    // A database of its own, set up by the store (same collections and indexes), then written raw.
    const rawDatabase = `${target.databaseName}_raw`;
    const setup = await openMongoStore({ uri: mongo!.uri, databaseName: rawDatabase, retentionDays: 0 });
    await setup.close();
    driver = new MongoClient(mongo!.uri);
    const collection = driver.db(rawDatabase).collection('battery_data');
    const insert = async () => {
      const batch = new RecordBatch('battery-data', 1);
      batch.append(reading(1), Date.now() / 1000);
      await collection.insertOne(toDocument(batch, 0, new ObjectId()));
    };
    operations.push({ label: 'raw driver insertOne, same server (ceiling)', run: insert, samples: [], elapsedMs: 0 });
  }
  // Warm-up: connections open, JIT done, before anything is timed.
  for (let i = 0; i < 200; i++) for (const operation of operations) await operation.run();
  const share = (seconds * 1000) / ROUNDS / operations.length;
  for (let round = 0; round < ROUNDS; round++) {
    for (const operation of operations) {
      const { samples, elapsedMs } = await sequentially(share, operation.run);
      operation.samples.push(...samples);
      operation.elapsedMs += elapsedMs;
    }
  }
  for (const client of clients) client.close();
  await noStore.stop();
  await driver?.close();
  const [post, floor, insertOne] = operations.map((operation) => {
    const figures = sequentialFigures(operation.samples, operation.elapsedMs);
    line(operation.label, figures);
    return figures;
  });
  if (insertOne === undefined) return { post, no_store_post: floor };
  const ratio = +(post!.p50_ms / insertOne.p50_ms).toFixed(3);
  line('  POST p50 / insertOne p50', { ratio, target: '<= 1.2', met: ratio <= 1.2 ? 'yes' : 'no' });
  return { post, no_store_post: floor, raw_insert_one: insertOne, p50_ratio_to_insert_one: ratio };
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
  const figures: { single_post_no_store?: Awaited<ReturnType<typeof load>>; raw_insert_rows_per_s?: number } = {};
  if (parts.has('concurrent')) {
    const ceilingServer = await spawnServer(NO_STORE, []);
    figures.single_post_no_store = await load({ url: `${ceilingServer.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
    await ceilingServer.stop();
    line('single POST, no-store ceiling (50 conns)', figures.single_post_no_store);
  }
  if (parts.has('batched')) {
    figures.raw_insert_rows_per_s = rawInsertCeiling(200_000);
    line('raw better-sqlite3, 1,000-row transactions', { rows_per_s: figures.raw_insert_rows_per_s });
  }
  return figures;
}

async function measureStore(store: string, ceiling: Awaited<ReturnType<typeof ceilings>>) {
  const results: Record<string, unknown> = {};
  console.log(`\n== ${store}${store === 'mongodb' ? ` (${mongo!.description})` : ''}`);
  if (parts.has('concurrent')) {
    const target = newTarget(store);
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    const single = await load({ url: `${service.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
    await service.stop();
    const ratio = +(single.requests_per_s / ceiling.single_post_no_store!.requests_per_s).toFixed(3);
    results.single_post = { ...single, ratio_to_no_store: ratio };
    line('single POST (50 conns)', { ...single, ratio });
  }
  if (parts.has('one-connection')) {
    const target = newTarget(store);
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    results.one_connection = await oneConnection(store, service, target);
    await service.stop();
  }
  if (parts.has('batched')) {
    const target = newTarget(store);
    const service = await spawnServer(CLI, ['serve'], serviceEnv(target));
    const batched = await load({ url: `${service.url}/api/battery-data`, ...post, body: batchBody, connections: 8, duration: seconds });
    await service.stop();
    const recordsPerSecond = batched.requests_per_s * 1000;
    const ratio = +(recordsPerSecond / ceiling.raw_insert_rows_per_s!).toFixed(3);
    results.batched_post = { records_per_s: recordsPerSecond, p50_ms: batched.p50_ms, p99_ms: batched.p99_ms, errors: batched.errors, non2xx: batched.non2xx, ratio_to_raw_insert: ratio };
    line('batched POST, 1,000 records (8 conns)', { records_per_s: recordsPerSecond, p50_ms: batched.p50_ms, p99_ms: batched.p99_ms, errors: batched.errors, ratio });
  }
  if (parts.has('reads')) {
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
const results: Record<string, unknown> = { command: `bench/api.ts ${process.argv.slice(2).join(' ')}`.trim(), ceilings: ceiling };
for (const store of stores) {
  if (store === 'mongodb') mongo = await startMongoServer();
  results[store] = await measureStore(store, ceiling);
}
await mongo?.stop();
writeResults(parts.size === PARTS.length ? 'api' : `api-${PARTS.filter((part) => parts.has(part)).join('-')}`, results);
