/**
 * API benchmark: single POSTs and batched POSTs against the real service (SQLite store), and
 * latest/history at 1,000,000 stored rows; each beside its ceiling measured in the same run:
 * the same route and validation with no store, and raw better-sqlite3 inserts of the same rows in
 * 1,000-row transactions. Prints the figures and writes bench/results/api.json.
 *
 *   node --import tsx bench/api.ts [--seconds 10] [--rows 1000000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { toNewRecord, type NewRecord } from '../src/records/kinds.js';
import { configureConnection, createSchema } from '../src/store/sqlite-schema.js';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { load, spawnServer, writeResults } from './support.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, rows: { type: 'string', default: '1000000' } } });
const seconds = Number(values.seconds);
const rows = Number(values.rows);
const CLI = new URL('../src/cli.ts', import.meta.url).pathname;
const NO_STORE = new URL('./servers/no-store-server.ts', import.meta.url).pathname;

const reading = (i: number) => ({ pack_voltage: 380 + (i % 40), pack_current: -12.5 + (i % 7), cell_temp: 25 + (i % 11) / 2, battery_id: `pack-${i % 10}` });
const singleBody = JSON.stringify(reading(1));
const batchBody = JSON.stringify(Array.from({ length: 1000 }, (_, i) => reading(i)));

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'battery-bench-'));
}

/** Raw better-sqlite3: the same rows into the same table and indexes, 1,000 per transaction. */
function rawInsertCeiling(total: number): number {
  const dir = tempDir();
  const db = new Database(path.join(dir, 'raw.sqlite'));
  configureConnection(db);
  createSchema(db);
  const insert = db.prepare(
    'INSERT INTO battery_data (battery_id, source, idem_key, timestamp, received_at, device_time, pack_voltage, pack_current, cell_temp) VALUES (?, ?, NULL, ?, ?, NULL, ?, ?, ?)',
  );
  const now = Date.now() / 1000;
  const batch = db.transaction((start: number) => {
    for (let i = start; i < start + 1000; i++) {
      const r = reading(i);
      insert.run(r.battery_id, 'battery_monitor', now + i / 1000, now, r.pack_voltage, r.pack_current, r.cell_temp);
    }
  });
  const began = performance.now();
  for (let start = 0; start < total; start += 1000) batch(start);
  const rate = total / ((performance.now() - began) / 1000);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return Math.round(rate);
}

async function prefill(dataDir: string, total: number): Promise<void> {
  const store = await openSqliteStore(dataDir);
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

const results: Record<string, unknown> = {};
const post = { method: 'POST' as const, headers: { 'content-type': 'application/json' } };

// 1. Single POSTs, 50 connections: ceiling, then the service.
{
  const ceilingServer = await spawnServer(NO_STORE, []);
  const ceiling = await load({ url: `${ceilingServer.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
  await ceilingServer.stop();
  const dataDir = tempDir();
  const service = await spawnServer(CLI, ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0', LOG_LEVEL: 'info' });
  const single = await load({ url: `${service.url}/api/battery-data`, ...post, body: singleBody, connections: 50, duration: seconds });
  await service.stop();
  rmSync(dataDir, { recursive: true, force: true });
  results.single_post = { ceiling_no_store: ceiling, service: single, ratio: +(single.requests_per_s / ceiling.requests_per_s).toFixed(3) };
  line('single POST, no-store ceiling (50 conns)', ceiling);
  line('single POST, service (50 conns)', single);
  line('  ratio', { ratio: (results.single_post as { ratio: number }).ratio });
}

// 2. Batched POSTs of 1,000 records: raw insert ceiling, then the service.
{
  const raw = rawInsertCeiling(200_000);
  const dataDir = tempDir();
  const service = await spawnServer(CLI, ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0', LOG_LEVEL: 'info' });
  const batched = await load({ url: `${service.url}/api/battery-data`, ...post, body: batchBody, connections: 8, duration: seconds });
  await service.stop();
  rmSync(dataDir, { recursive: true, force: true });
  const recordsPerSecond = batched.requests_per_s * 1000;
  results.batched_post = { raw_insert_ceiling_rows_per_s: raw, service: { ...batched, records_per_s: recordsPerSecond }, ratio: +(recordsPerSecond / raw).toFixed(3) };
  line('raw better-sqlite3, 1,000-row transactions', { rows_per_s: raw });
  line('batched POST, 1,000 records (8 conns)', { records_per_s: recordsPerSecond, p50_ms: batched.p50_ms, p99_ms: batched.p99_ms, errors: batched.errors });
  line('  ratio', { ratio: (results.batched_post as { ratio: number }).ratio });
}

// 3. Reads at 1,000,000 stored rows.
{
  const dataDir = tempDir();
  const began = performance.now();
  await prefill(dataDir, rows);
  line(`prefilled ${rows} rows`, { seconds: ((performance.now() - began) / 1000).toFixed(1) });
  const service = await spawnServer(CLI, ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0', LOG_LEVEL: 'info' });
  const reads: Record<string, unknown> = {};
  for (const [label, query] of [
    ['latest', '/api/battery-data/latest'],
    ['latest?battery_id', '/api/battery-data/latest?battery_id=pack-3'],
    ['history limit=100', '/api/battery-data/history?limit=100'],
    ['history?battery_id limit=100', '/api/battery-data/history?limit=100&battery_id=pack-3'],
  ] as const) {
    const figures = await load({ url: `${service.url}${query}`, connections: 10, duration: Math.max(3, seconds / 2) });
    reads[label] = figures;
    line(`GET ${label} at ${rows} rows (10 conns)`, figures);
  }
  await service.stop();
  rmSync(dataDir, { recursive: true, force: true });
  results.reads_at_rows = { rows, ...reads };
}

writeResults('api', results);
