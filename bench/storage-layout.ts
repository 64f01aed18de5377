/**
 * Storage layout experiment (docs/decisions/0005-storage-layout.md): the battery_data table in four
 * layouts, each filled the same way (1,000-row transactions, the store's pragmas: WAL,
 * synchronous=FULL), then every read the store makes, timed and explained (EXPLAIN QUERY PLAN).
 *
 *   today        rowid table, indexes (battery_id, timestamp), (timestamp), partial unique idem_key
 *   no-time-idx  today without the (timestamp) index
 *   clustered    WITHOUT ROWID, primary key (battery_id, timestamp, id), partial unique idem_key
 *   clustered+t  clustered with a (timestamp) index
 *   ceiling      issue 8's ceiling: rowid table with only a (battery_id, timestamp) index
 *
 * The layouts are filled round-robin `--repeat` times and the median insert rate is reported, so
 * that a busy neighbour on the machine does not favour whichever layout ran while it was quiet.
 *
 * Run: node --import tsx bench/storage-layout.ts [--rows 1000000] [--packs 10] [--repeat 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { configureConnection } from '../src/store/sqlite-schema.js';
import { writeResults } from './support.js';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, packs: { type: 'string', default: '10' }, repeat: { type: 'string', default: '3' } } });
const ROWS = Number(values.rows);
const PACKS = Number(values.packs);
const REPEAT = Number(values.repeat);

const COLUMNS = 'battery_id TEXT NOT NULL, timestamp REAL NOT NULL, received_at REAL NOT NULL, source TEXT NOT NULL, device_time REAL, idem_key TEXT, pack_voltage REAL NOT NULL, pack_current REAL NOT NULL, cell_temp REAL NOT NULL';
const KEY_INDEX = 'CREATE UNIQUE INDEX t_key ON t (idem_key) WHERE idem_key IS NOT NULL';
const LAYOUTS: Record<string, string[]> = {
  today: [`CREATE TABLE t (id INTEGER PRIMARY KEY, ${COLUMNS})`, 'CREATE INDEX t_bt ON t (battery_id, timestamp)', 'CREATE INDEX t_time ON t (timestamp)', KEY_INDEX],
  'no-time-idx': [`CREATE TABLE t (id INTEGER PRIMARY KEY, ${COLUMNS})`, 'CREATE INDEX t_bt ON t (battery_id, timestamp)', KEY_INDEX],
  clustered: [`CREATE TABLE t (id INTEGER NOT NULL, ${COLUMNS}, PRIMARY KEY (battery_id, timestamp, id)) WITHOUT ROWID`, KEY_INDEX],
  'clustered+t': [`CREATE TABLE t (id INTEGER NOT NULL, ${COLUMNS}, PRIMARY KEY (battery_id, timestamp, id)) WITHOUT ROWID`, 'CREATE INDEX t_time ON t (timestamp)', KEY_INDEX],
  ceiling: [`CREATE TABLE t (id INTEGER PRIMARY KEY, ${COLUMNS})`, 'CREATE INDEX t_bt ON t (battery_id, timestamp)'],
};

const SELECT = 'SELECT id, timestamp, received_at, source, battery_id, device_time, pack_voltage, pack_current, cell_temp FROM t';
const READS: Record<string, [string, (now: number) => unknown[]]> = {
  latest: [`${SELECT} ORDER BY timestamp DESC, id DESC LIMIT 1`, () => []],
  latestOf: [`${SELECT} WHERE battery_id = ? ORDER BY timestamp DESC, id DESC LIMIT 1`, () => ['pack-3']],
  history: [`${SELECT} WHERE timestamp >= ? ORDER BY timestamp DESC, id DESC LIMIT 100`, (now) => [now - 86_400]],
  historyOf: [`${SELECT} WHERE battery_id = ? AND timestamp >= ? ORDER BY timestamp DESC, id DESC LIMIT 100`, (now) => ['pack-3', now - 86_400]],
  page: [`${SELECT} WHERE (timestamp, id) > (?, ?) AND timestamp < ? ORDER BY timestamp, id LIMIT 1000`, (now) => [now - 5, -1, now + 100]],
  pageOf: [`${SELECT} WHERE battery_id = ? AND (timestamp, id) > (?, ?) AND timestamp < ? ORDER BY timestamp, id LIMIT 1000`, (now) => ['pack-3', now - 5, -1, now + 100]],
  retentionCount: ['SELECT battery_id, count(*) FROM t WHERE timestamp < ? GROUP BY battery_id', (now) => [now - 1]],
  keyLookup: ['SELECT id FROM t WHERE idem_key = ?', () => ['k-1']],
};

function run(name: string, ddl: string[]) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'battery-layout-'));
  const file = path.join(dir, 'layout.sqlite');
  const db = new Database(file);
  configureConnection(db);
  for (const statement of ddl) db.exec(statement);
  const insert = db.prepare(
    'INSERT INTO t (id, battery_id, source, idem_key, timestamp, received_at, device_time, pack_voltage, pack_current, cell_temp) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)',
  );
  const now = Date.now() / 1000;
  // 100,000 rows a second of arrival time, as the collector stamps them under load.
  const batch = db.transaction((start: number) => {
    for (let i = start; i < start + 1000; i++) {
      const t = Math.round((now - ROWS / 100_000 + i / 100_000) * 1000) / 1000;
      insert.run(i + 1, `pack-${i % PACKS}`, 'battery_monitor', t, t, i / 10, 380 + (i % 40) / 4, -12.5 + (i % 7), 25 + (i % 11) / 2);
    }
  });
  const began = performance.now();
  for (let start = 0; start < ROWS; start += 1000) batch(start);
  const insertRate = Math.round(ROWS / ((performance.now() - began) / 1000));
  db.exec('ANALYZE');
  const reads: Record<string, { plan: string; us: number }> = {};
  for (const [read, [sql, params]] of Object.entries(READS)) {
    const statement = db.prepare(sql);
    const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params(now)) as { detail: string }[]).map((row) => row.detail).join('; ');
    const times: number[] = [];
    for (let i = 0; i < 21; i++) {
      const t0 = performance.now();
      statement.all(...params(now));
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    reads[read] = { plan, us: Math.round(times[10]! * 1000) };
  }
  const bytes = (db.prepare('SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()').pluck().get() as number);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(`${name.padEnd(12)} insert ${insertRate.toLocaleString('en')} rows/s`);
  return { insertRate, fileMib: Math.round(bytes / 2 ** 20), reads };
}

const runs: Record<string, ReturnType<typeof run>[]> = {};
for (let round = 0; round < REPEAT; round++) {
  for (const [name, ddl] of Object.entries(LAYOUTS)) (runs[name] ??= []).push(run(name, ddl));
}
const results: Record<string, unknown> = { rows: ROWS, packs: PACKS, repeat: REPEAT };
console.log();
for (const [name, all] of Object.entries(runs)) {
  const rates = all.map((r) => r.insertRate).sort((a, b) => a - b);
  const median = rates[Math.floor(rates.length / 2)]!;
  const last = all[all.length - 1]!;
  console.log(`${name.padEnd(12)} insert median ${median.toLocaleString('en')} rows/s (${rates.join(', ')}), file ${last.fileMib} MiB`);
  for (const [read, { plan, us }] of Object.entries(last.reads)) console.log(`  ${read.padEnd(15)} ${String(us).padStart(8)} µs  ${plan}`);
  results[name] = { insert_rows_per_s_median: median, insert_rows_per_s: rates, file_mib: last.fileMib, reads: last.reads };
}
writeResults('storage-layout', results);
