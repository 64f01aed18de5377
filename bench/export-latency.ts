/**
 * Export latency benchmark (issue 15, item 6): does a long export hold up other requests?
 *
 * The service (`serve`, SQLite in a temp dir) runs as a child process and is filled through
 * POST /api/battery-data with --rows readings (450,000 by default, 10 packs). Then, at once:
 *   - a fast exporter: GET /api/battery-data/export?hours=87600 (every row, CSV), read as fast as
 *     this process reads, on its own connection; it gives the export's rows/s;
 *   - a slow exporter: the same export on a raw socket that reads one chunk every --slow-every-ms
 *     (about 1 MB/s): the server must stop reading the store for it rather than buffer the range;
 *   - a probe: GET /health every 10 ms (the next one 10 ms after the previous was sent, or at once
 *     when an answer took longer) on a keep-alive connection.
 * The probe also runs alone for --idle-seconds before the exports, for the figures of a quiet
 * service. The slow exporter is closed when the fast one is done. The service's RSS (VmRSS from
 * /proc) is sampled with every probe: its growth over the idle figure shows whether the slow
 * exporter's range was buffered.
 * The exporters and the probe share this process: the fast one reads 64 KiB chunks and only counts
 * their newlines, so the probe's own event loop stays free (its latency while idle is printed for
 * comparison). Target: the exports add at most 5 ms to the /health p99 of the idle service.
 * Prints the figures and writes bench/results/export-latency.json.
 *
 *   node --import tsx bench/export-latency.ts [--rows 450000] [--idle-seconds 2] [--slow-every-ms 50]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '450000' },
    'idle-seconds': { type: 'string', default: '2' },
    'slow-every-ms': { type: 'string', default: '50' },
  },
});
const ROWS = Number(values.rows);
const IDLE_SECONDS = Number(values['idle-seconds']);
const SLOW_EVERY_MS = Number(values['slow-every-ms']);
const PROBE_EVERY_MS = 10;
const PACKS = 10;
const POST_BATCH = 5000;
const EXPORT_PATH = '/api/battery-data/export?hours=87600&format=csv';

function line(label: string, figures: object): void {
  console.log(`${label.padEnd(40)} ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join('  ')}`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function latencyFigures(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (ms: number) => +ms.toFixed(2);
  return { requests: sorted.length, p50_ms: round(percentile(sorted, 50)), p99_ms: round(percentile(sorted, 99)), max_ms: round(sorted.at(-1) ?? NaN) };
}

function rssMiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? NaN : +(Number(match[1]) / 1024).toFixed(1);
}

async function fill(url: string): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const began = performance.now();
  for (let start = 0; start < ROWS; start += POST_BATCH) {
    const count = Math.min(POST_BATCH, ROWS - start);
    const body = JSON.stringify(
      Array.from({ length: count }, (_, j) => ({
        battery_id: `pack-${(start + j) % PACKS}`,
        pack_voltage: 380 + ((start + j) % 40) / 4,
        pack_current: -12.5 + ((start + j) % 7),
        cell_temp: 25 + ((start + j) % 11) / 2,
      })),
    );
    const status = await new Promise<number>((resolve, reject) => {
      const request = http.request(
        new URL('/api/battery-data', url),
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (response) => {
          response.resume();
          response.on('end', () => resolve(response.statusCode ?? 0));
        },
      );
      request.on('error', reject);
      request.end(body);
    });
    if (status !== 200) throw new Error(`POST /api/battery-data: ${status}`);
  }
  agent.destroy();
  return (performance.now() - began) / 1000;
}

/** /health every PROBE_EVERY_MS until stopped; answers each latency in ms, and samples the service's RSS. */
function probe(url: string, pid: number): { stop(): Promise<{ latencies: number[]; peakRssMiB: number }> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const latencies: number[] = [];
  let peakRssMiB = 0;
  let stopped = false;
  const run = (async () => {
    while (!stopped) {
      const sent = performance.now();
      await new Promise<void>((resolve, reject) => {
        http
          .get(new URL('/health', url), { agent }, (response) => {
            response.resume();
            response.on('end', () => (response.statusCode === 200 ? resolve() : reject(new Error(`GET /health: ${response.statusCode}`))));
          })
          .on('error', reject);
      });
      latencies.push(performance.now() - sent);
      peakRssMiB = Math.max(peakRssMiB, rssMiB(pid));
      const wait = PROBE_EVERY_MS - (performance.now() - sent);
      if (wait > 0) await sleep(wait);
    }
    agent.destroy();
  })();
  return {
    stop: async () => {
      stopped = true;
      await run;
      return { latencies, peakRssMiB };
    },
  };
}

/** Reads the whole export as fast as it comes; answers its rows (newlines less the header) and seconds. */
function fastExport(url: string): Promise<{ rows: number; bytes: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    const began = performance.now();
    let newlines = 0;
    let bytes = 0;
    http
      .get(new URL(EXPORT_PATH, url), { agent: false }, (response) => {
        if (response.statusCode !== 200) reject(new Error(`GET export: ${response.statusCode}`));
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) newlines++;
        });
        response.on('end', () => resolve({ rows: newlines - 1, bytes, seconds: (performance.now() - began) / 1000 }));
        response.on('error', reject);
      })
      .on('error', reject);
  });
}

/** The export on a raw socket that reads one chunk every SLOW_EVERY_MS; close() answers the bytes it read. */
function slowExport(url: string): { close(): number } {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  let bytes = 0;
  socket.on('error', () => {});
  socket.write(`GET ${EXPORT_PATH} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\n\r\n`);
  socket.pause();
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    socket.pause();
  });
  const timer = setInterval(() => socket.resume(), SLOW_EVERY_MS);
  return {
    close: () => {
      clearInterval(timer);
      socket.destroy();
      return bytes;
    },
  };
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg();
  console.log(
    `Export latency benchmark: ${ROWS} rows, one fast and one slow CSV export of all of them, /health every ${PROBE_EVERY_MS} ms; ` +
      `${os.cpus().length} cores, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before the run\n`,
  );
  const dataDir = mkdtempSync(path.join(tmpdir(), 'battery-bench-export-'));
  const service = await spawnServer(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)), ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0' });
  const pid = service.child.pid!;
  try {
    const fillSeconds = await fill(service.url);
    line('filled through POST', { rows: ROWS, seconds: +fillSeconds.toFixed(1) });

    const idleProbe = probe(service.url, pid);
    await sleep(IDLE_SECONDS * 1000);
    const idle = await idleProbe.stop();
    const idleRssMiB = rssMiB(pid);

    const busyProbe = probe(service.url, pid);
    const slow = slowExport(service.url);
    const fast = await fastExport(service.url);
    const slowBytes = slow.close();
    const busy = await busyProbe.stop();

    const idleFigures = latencyFigures(idle.latencies);
    const busyFigures = latencyFigures(busy.latencies);
    const fastFigures = { rows: fast.rows, mib: +(fast.bytes / 2 ** 20).toFixed(1), seconds: +fast.seconds.toFixed(2), rows_per_s: Math.round(fast.rows / fast.seconds) };
    const slowFigures = { mib_read: +(slowBytes / 2 ** 20).toFixed(1), read_every_ms: SLOW_EVERY_MS };
    const memory = { idle_rss_mib: idleRssMiB, peak_rss_during_exports_mib: busy.peakRssMiB, growth_mib: +(busy.peakRssMiB - idleRssMiB).toFixed(1) };
    line('/health, service idle', idleFigures);
    line('/health, during the exports', busyFigures);
    line('fast exporter', fastFigures);
    line('slow exporter (closed after the fast one)', slowFigures);
    line('service memory', memory);
    if (fast.rows !== ROWS) line('  the fast export did not hold every row', { expected: ROWS, got: fast.rows });
    // Against the idle figures of the same run: what the exports add, not what a busy machine adds anyway.
    const added = { p50_ms: +(busyFigures.p50_ms - idleFigures.p50_ms).toFixed(2), p99_ms: +(busyFigures.p99_ms - idleFigures.p99_ms).toFixed(2) };
    line('/health delay the exports added', added);
    const met = added.p99_ms <= 5 && fast.rows === ROWS;
    line('target: the exports add at most 5 ms to /health p99', { met: met ? 'yes' : 'no' });

    writeResults('export-latency', {
      setup: { rows: ROWS, packs: PACKS, export: EXPORT_PATH, probe_every_ms: PROBE_EVERY_MS, slow_read_every_ms: SLOW_EVERY_MS, idle_seconds: IDLE_SECONDS, load_average_before: loadBefore },
      fill_seconds: +fillSeconds.toFixed(1),
      health_ms: { idle: idleFigures, during_exports: busyFigures, added_by_exports: added },
      fast_export: fastFigures,
      slow_export: slowFigures,
      service_memory: memory,
      target_met: met,
    });
  } finally {
    await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
