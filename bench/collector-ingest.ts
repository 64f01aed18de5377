/**
 * Collector benchmark.
 *
 * 1. Ceiling: raw better-sqlite3 inserts of the same rows in 1,000-row transactions, into the same
 *    table and indexes as the store (and, for context, into a bare table without indexes).
 * 2. In-process ingest, end to end: the all-in-one service (`battery-monitor run`) in its own
 *    process; 50 TCP connections send binary frames as fast as it takes them for --duration seconds;
 *    the clock stops when every frame sent is readable through the API (GET /api/batteries counts).
 *    Records/s overall and per second, and the service's peak RSS (VmHWM). Before the load, the
 *    service's idle RSS: 5 s after it listens and after --idle-seconds of idling; and again
 *    --idle-seconds after the load. V8 gives back the young generation that start-up (schema
 *    compilation) and load grew only once its memory reducer sees the process idle, about 30 s in:
 *    idle RSS is the figure after that.
 * 3. Standalone, end to end: `battery-monitor collect` and `battery-monitor serve` as two
 *    processes; --standalone-frames frames sent as fast as the collector takes them (into its
 *    spool), until readable through the API; the collector's and the API's peak RSS.
 * 4. Standalone forwarder alone: a spool prefilled with --forward-records records, delivered to the API
 *    (`battery-monitor serve` in its own process), and to a no-store server with the same route
 *    validation (the forwarder's own ceiling). Records/s.
 *
 * Prints the figures and writes bench/results/collector-ingest.json.
 *
 *   node --import tsx bench/collector-ingest.ts --help
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFrame, FRAME_BYTES } from '../src/collector/binary-decoder.js';
import { RecordBatch } from '../src/ingest/record-batch.js';
import { startForwarder } from '../src/relay/forwarder.js';
import { createCollectorMetrics } from '../src/collector/metrics.js';
import { Spool } from '../src/relay/spool.js';
import { rawInsertCeiling, serviceCommand, spawnNode, spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    connections: { type: 'string', default: '50' },
    'standalone-frames': { type: 'string', default: '2000000' },
    'forward-records': { type: 'string', default: '1000000' },
    'ceiling-rows': { type: 'string', default: '1000000' },
    'idle-seconds': { type: 'string', default: '60' },
    skip: { type: 'string', default: '' },
    /** Run the children from the TypeScript sources under tsx instead of a build (tsx adds ~40 MB of RSS). */
    tsx: { type: 'boolean', default: false },
    /** NODE_OPTIONS for the service and collector processes, e.g. "--max-old-space-size=96". */
    'node-options': { type: 'string', default: '' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(`Usage: node --import tsx bench/collector-ingest.ts [options]

Ceiling (raw better-sqlite3 inserts), in-process ingest (battery-monitor run), standalone end to
end (collect -> spool -> serve), and the forwarder alone; figures to bench/results/collector-ingest.json
(or BENCH_RESULTS_DIR).

  --duration S            in-process ingest: seconds of load (default 60)
  --connections N         TCP connections sending frames (default 50)
  --standalone-frames N   standalone: frames to send (default 2000000)
  --forward-records N     forwarder: records prefilled in the spool (default 1000000)
  --ceiling-rows N        ceiling: rows inserted (default 1000000)
  --idle-seconds S        in-process: idle before and after the load, RSS read after it (default 60)
  --skip LIST             any of ceiling,ingest,standalone,forwarder
  --tsx                   run the children from the TypeScript sources instead of a build
  --node-options TEXT     NODE_OPTIONS of the children, e.g. "--max-old-space-size=96"
  -h, --help              this text`);
  process.exit(0);
}
const durationSeconds = Number(values.duration);
const standaloneFrames = Number(values['standalone-frames']);
const idleSeconds = Number(values['idle-seconds']);
const connections = Number(values.connections);
const forwardRecords = Number(values['forward-records']);
const ceilingRows = Number(values['ceiling-rows']);
const skip = new Set(values.skip.split(',').filter(Boolean));
const NO_STORE = new URL('./servers/no-store-server.ts', import.meta.url).pathname;
const childArgs = serviceCommand(values.tsx);
const SPECS_FILE = new URL('../config/battery-specs.json', import.meta.url).pathname;

const made: string[] = [];
process.on('exit', () => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'collector-bench-'));
  made.push(dir);
  return dir;
}

const reading = (i: number) => ({ device_time: i / 10, pack_voltage: 380 + (i % 40) / 4, pack_current: -12.5 + (i % 7), cell_temp: 25 + (i % 11) / 2 });
const round = (x: number, digits = 0) => Math.round(x * 10 ** digits) / 10 ** digits;

// ---- 1. ceiling ----


// ---- 2. in-process ingest ----

interface Child {
  child: ChildProcess;
  /** The API's URL (service), or the metrics URL (collect). */
  url: string;
  binaryPort: number;
  stop(): Promise<void>;
}

/** A port free right now: the binary listener's port is chosen here rather than read from the logs, whose shape is not the bench's to rely on. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** `battery-monitor <command>` in its own process, on free ports; answers once it listens. */
async function startChild(command: string[], env: Record<string, string>, readyMessage: string): Promise<Child> {
  const dataDir = tempDir();
  const binaryPort = await freePort();
  const server = await spawnNode(
    [...childArgs, ...command],
    {
      DATA_DIR: dataDir,
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      COLLECTOR_HOST: '127.0.0.1',
      COLLECTOR_BINARY_PORT: String(binaryPort),
      COLLECTOR_JSON_PORT: '0',
      COLLECTOR_V2_PORT: '0',
      LOG_LEVEL: 'info',
      RETENTION_DAYS: '0',
      BATTERY_SPECS_FILE: SPECS_FILE,
      NODE_OPTIONS: values['node-options'],
      ...env,
    },
    readyMessage,
  );
  return { ...server, binaryPort };
}

function peakRssMiB(pid: number): number {
  return statusMiB(pid, 'VmHWM');
}

function statusMiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return round(kib / 1024, 1);
}

const sleep = (seconds: number) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

/** RSS of an idle process: 5 s in, then after `seconds` of idling in all. */
async function idleRssMiB(pid: number, seconds: number): Promise<{ after_5_s: number; after_idle: number; idle_s: number }> {
  await sleep(Math.min(5, seconds));
  const after5 = statusMiB(pid, 'VmRSS');
  await sleep(Math.max(0, seconds - 5));
  return { after_5_s: after5, after_idle: statusMiB(pid, 'VmRSS'), idle_s: seconds };
}

async function storedCount(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/api/batteries`)).json()) as { batteries: { counts: Record<string, number> }[] };
  return body.batteries.reduce((n, b) => n + (b.counts['battery-data'] ?? 0), 0);
}

/**
 * Frames over `connections` connections to `binaryPort` for durationSeconds, as fast as they are
 * taken; the clock stops when every frame sent is readable through the API at `apiUrl`.
 */
async function ingestEndToEnd(
  binaryPort: number,
  apiUrl: string,
  rssOf: Record<string, number>,
  seconds: number,
  options: { maxFrames?: number; refused?: () => Promise<number> } = {},
): Promise<Record<string, unknown>> {
  // 4,096 frames (64 KiB) per write, as a busy device's socket would carry them.
  const chunk = Buffer.alloc(4096 * FRAME_BYTES);
  for (let i = 0; i < 4096; i++) encodeFrame(reading(i), chunk, i * FRAME_BYTES);
  const before = await storedCount(apiUrl);
  const sockets = await Promise.all(
    Array.from({ length: connections }, () => new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: binaryPort }, () => resolve(socket));
      socket.once('error', reject);
    })),
  );
  let sentBytes = 0;
  let running = true;
  const started = performance.now();
  const maxBytes = (options.maxFrames ?? Infinity) * FRAME_BYTES;
  // Loopback sockets buffer megabytes each: without a bound, 50 of them would hold minutes of
  // frames after the senders stop. Like devices with bounded buffers, keep at most `window` frames
  // sent and not yet readable.
  const windowFrames = 1_000_000;
  let readable = before;
  const polling = setInterval(() => {
    void storedCount(apiUrl).then((count) => (readable = Math.max(readable, count)));
  }, 100);
  const senders = sockets.map(async (socket) => {
    while (running && sentBytes < maxBytes) {
      if (sentBytes / FRAME_BYTES - (readable - before) > windowFrames) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      sentBytes += chunk.length;
      if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
    }
    await new Promise<void>((resolve) => socket.end(resolve));
  });
  // Throughput per second, read through the API while the load runs.
  const perSecond: number[] = [];
  let last = before;
  const sampler = setInterval(() => {
    perSecond.push(readable - last);
    last = readable;
  }, 1000);
  const timer = setTimeout(() => (running = false), seconds * 1000);
  await Promise.all(senders);
  clearTimeout(timer);
  const sentFrames = sentBytes / FRAME_BYTES;
  let stored = 0;
  let lastLog = performance.now();
  // Frames the collector refused (a full spool) are counted, not stored: do not wait for them.
  while ((stored = (await storedCount(apiUrl)) - before) < sentFrames - ((await options.refused?.()) ?? 0)) {
    if (performance.now() - lastLog > 5000) {
      console.log(`  ${stored.toLocaleString()} of ${sentFrames.toLocaleString()} readable`);
      lastLog = performance.now();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const elapsed = (performance.now() - started) / 1000;
  clearInterval(sampler);
  clearInterval(polling);
  // Seconds 3.. of the run: past the start, while the load was on.
  const steady = perSecond.slice(2, Math.max(3, seconds)).sort((a, b) => a - b);
  const refused = (await options.refused?.()) ?? 0;
  return {
    connections,
    ...(options.maxFrames === undefined ? { duration_s: seconds } : {}),
    frames_sent: sentFrames,
    ...(options.refused === undefined ? {} : { frames_refused_spool_full: refused }),
    frames_stored: stored,
    seconds_until_readable: round(elapsed, 2),
    records_per_s: Math.round(sentFrames / elapsed),
    per_second: { min: steady[0] ?? 0, median: steady[Math.floor(steady.length / 2)] ?? 0, max: steady.at(-1) ?? 0 },
    peak_rss_mib: Object.fromEntries(Object.entries(rssOf).map(([name, pid]) => [name, peakRssMiB(pid)])),
  };
}

// ---- 3. forwarder ----

async function forward(apiUrl: string, total: number): Promise<{ records: number; seconds: number; records_per_s: number }> {
  const spool = await Spool.open(path.join(tempDir(), 'spool'), { maxBytes: 4 * 1024 ** 3, metrics: createCollectorMetrics() });
  const now = Date.now() / 1000;
  for (let start = 0; start < total; start += 10_000) {
    const batch = new RecordBatch('battery-data', 10_000);
    for (let i = start; i < Math.min(total, start + 10_000); i++) batch.append({ ...reading(i), timestamp: now + i / 1000, battery_id: `pack-${i % 10}` }, now);
    await spool.submit(batch);
  }
  const began = performance.now();
  const forwarder = startForwarder({ apiUrl, spool });
  await forwarder.idle();
  const seconds = (performance.now() - began) / 1000;
  await forwarder.close();
  await spool.close();
  return { records: total, seconds: round(seconds, 2), records_per_s: Math.round(total / seconds) };
}

// ---- run ----

const results: Record<string, unknown> = { node_options: values['node-options'] };
if (!skip.has('ceiling')) {
  const store = rawInsertCeiling(ceilingRows, 'store');
  const bare = rawInsertCeiling(ceilingRows, 'bare');
  results.ceiling = { rows: ceilingRows, raw_insert_rows_per_s: store, raw_insert_bare_table_rows_per_s: bare };
  console.log(`ceiling: raw better-sqlite3, 1,000-row transactions: ${store.toLocaleString()} rows/s into the store's table and indexes, ${bare.toLocaleString()} rows/s into a bare table`);
}
const ceiling = (results.ceiling as { raw_insert_rows_per_s: number } | undefined)?.raw_insert_rows_per_s;
const vsCeiling = (figures: Record<string, unknown>) => {
  if (ceiling !== undefined) figures.ratio_to_ceiling = round((figures.records_per_s as number) / ceiling, 3);
  return ceiling === undefined ? '' : ` (${Math.round((figures.ratio_to_ceiling as number) * 100)}% of the ceiling)`;
};
if (!skip.has('ingest')) {
  const service = await startChild(['run'], {}, 'battery monitor API listening');
  const idleBefore = await idleRssMiB(service.child.pid!, idleSeconds);
  console.log(`idle RSS of battery-monitor run: ${idleBefore.after_5_s} MiB 5 s after listening, ${idleBefore.after_idle} MiB after ${idleSeconds} s`);
  const ingest = await ingestEndToEnd(service.binaryPort, service.url, { service: service.child.pid! }, durationSeconds);
  const idleAfter = await idleRssMiB(service.child.pid!, idleSeconds);
  console.log(`idle RSS after the load: ${idleAfter.after_5_s} MiB 5 s after, ${idleAfter.after_idle} MiB after ${idleSeconds} s`);
  await service.stop();
  const ofCeiling = vsCeiling(ingest);
  results.in_process_ingest = { ...ingest, idle_rss_mib: { before_load: idleBefore, after_load: idleAfter } };
  console.log(
    `in-process ingest (battery-monitor run) over ${connections} connections for ${durationSeconds} s: ${(ingest.records_per_s as number).toLocaleString()} records/s until readable through the API${ofCeiling}` +
      `; per second ${JSON.stringify(ingest.per_second)}; peak RSS ${JSON.stringify(ingest.peak_rss_mib)} MiB`,
  );
}
if (!skip.has('standalone')) {
  const api = await startChild(['serve'], {}, 'battery monitor API listening');
  const collect = await startChild(['collect', '--api', api.url, '--metrics-port', '0', '--metrics-host', '127.0.0.1'], {}, 'collector forwarding to the API through the spool');
  const refused = async () => {
    const text = await (await fetch(`${collect.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('collector_rejected_total{listener="binary",reason="spool_full"}'));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  };
  const ingest = await ingestEndToEnd(collect.binaryPort, api.url, { collector: collect.child.pid!, api: api.child.pid! }, 3600, { maxFrames: standaloneFrames, refused });
  await collect.stop();
  await api.stop();
  results.standalone_ingest = ingest;
  console.log(
    `standalone (collect -> spool -> forwarder -> serve), ${standaloneFrames.toLocaleString()} frames over ${connections} connections: ${(ingest.records_per_s as number).toLocaleString()} records/s until readable through the API${vsCeiling(ingest)}` +
      `; per second ${JSON.stringify(ingest.per_second)}; peak RSS ${JSON.stringify(ingest.peak_rss_mib)} MiB`,
  );
}
if (!skip.has('forwarder')) {
  const api = await startChild(['serve'], {}, 'battery monitor API listening');
  const toApi = await forward(api.url, forwardRecords);
  await api.stop();
  const noStore = await spawnServer(NO_STORE, []);
  const toNoStore = await forward(noStore.url, forwardRecords);
  await noStore.stop();
  results.forwarder = { to_api: toApi, to_no_store_server: toNoStore };
  console.log(`forwarder: ${toApi.records_per_s.toLocaleString()} records/s to the API (SQLite), ${toNoStore.records_per_s.toLocaleString()} records/s to a no-store server with the same validation`);
}
writeResults('collector-ingest', results);
