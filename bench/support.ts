import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { configureConnection, createSchema } from '../src/store/sqlite-schema.js';

/** bench/results, unless BENCH_RESULTS_DIR says otherwise (run-all.ts --quick: short runs must not replace the figures the docs cite). */
export const RESULTS_DIR = process.env.BENCH_RESULTS_DIR || fileURLToPath(new URL('./results/', import.meta.url));

export function machine() {
  const cpus = os.cpus();
  return { cpu: cpus[0]?.model ?? 'unknown', cores: cpus.length, memory_gib: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
}

export function writeResults(name: string, results: unknown, dir = RESULTS_DIR): void {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), machine: machine(), results }, null, 2)}\n`);
  console.log(`\nwritten to ${path.relative(process.cwd(), file)}`);
}

export interface SpawnedServer {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** A server as its own process, so that the load generator does not share its event loop. */
export function spawnServer(script: string, args: string[], env: Record<string, string> = {}): Promise<SpawnedServer> {
  return spawnNode(['--import', 'tsx', script, ...args], { API_HOST: '127.0.0.1', API_PORT: '0', LOG_LEVEL: 'info', ...env });
}

/**
 * `node <nodeArgs>` with `env` over this process's, answered once it logs `ready` (a JSON log line):
 * with the URL that line holds, or its metrics port's.
 */
export async function spawnNode(nodeArgs: string[], env: Record<string, string | undefined>, ready = 'battery monitor API listening'): Promise<SpawnedServer> {
  const child = spawn(process.execPath, nodeArgs, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string; metricsPort?: number };
        if (entry.msg === ready) resolve(entry.url ?? `http://127.0.0.1:${entry.metricsPort}`);
      } catch {
        // not a log line
      }
    });
    void exited.then(() => reject(new Error(`node ${nodeArgs.join(' ')} exited before it logged "${ready}"`)));
  });
  return {
    url,
    child,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface LoadFigures {
  requests_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  non2xx: number;
}

export async function load(options: autocannon.Options): Promise<LoadFigures> {
  const result = await autocannon(options);
  return {
    requests_per_s: Math.round(result.requests.average),
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    errors: result.errors,
    non2xx: result.non2xx,
  };
}

/**
 * The ceiling every ingest figure is compared with: raw better-sqlite3 inserts of battery-data rows
 * in 1,000-row transactions, with the store's pragmas, into the store's table and indexes ('store')
 * or into a bare table without indexes ('bare', for context). Rows per second.
 */
export function rawInsertCeiling(total: number, schema: 'store' | 'bare' = 'store'): number {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'battery-ceiling-'));
  const db = new Database(path.join(dir, 'raw.sqlite'));
  configureConnection(db);
  if (schema === 'store') createSchema(db);
  else db.exec('CREATE TABLE battery_data (id INTEGER PRIMARY KEY, battery_id TEXT NOT NULL, timestamp REAL NOT NULL, received_at REAL NOT NULL, source TEXT NOT NULL, device_time REAL, idem_key TEXT, pack_voltage REAL NOT NULL, pack_current REAL NOT NULL, cell_temp REAL NOT NULL)');
  const insert = db.prepare(
    'INSERT INTO battery_data (battery_id, source, idem_key, timestamp, received_at, device_time, pack_voltage, pack_current, cell_temp) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?)',
  );
  const now = Date.now() / 1000;
  const batch = db.transaction((start: number) => {
    for (let i = start; i < start + 1000; i++) {
      // Rows of one arrival share a millisecond timestamp, as the collector stamps them.
      const t = Math.round((now + i / 100_000) * 1000) / 1000;
      insert.run(`pack-${i % 10}`, 'battery_monitor', t, t, i / 10, 380 + (i % 40) / 4, -12.5 + (i % 7), 25 + (i % 11) / 2);
    }
  });
  const began = performance.now();
  for (let start = 0; start < total; start += 1000) batch(start);
  const rate = total / ((performance.now() - began) / 1000);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return Math.round(rate);
}

/**
 * The node arguments that run the service's CLI: what `npm start` runs, compiled JavaScript, built
 * here into .cache/bench-dist so that dist/ is left alone; or, with `fromSources`, the TypeScript
 * sources under tsx (which adds ~40 MB of RSS).
 */
export function serviceCommand(fromSources: boolean): string[] {
  if (fromSources) return ['--import', 'tsx', fileURLToPath(new URL('../src/cli/main.ts', import.meta.url))];
  const buildDir = fileURLToPath(new URL('../.cache/bench-dist/', import.meta.url));
  execFileSync(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-p', 'tsconfig.build.json', '--outDir', buildDir], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: 'inherit',
  });
  return [path.join(buildDir, 'cli', 'main.js')];
}
