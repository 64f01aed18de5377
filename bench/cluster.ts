/**
 * Cross-instance delivery (issue 11): two service processes (A and B) on one MongoDB-wire server
 * (MONGODB_TEST_URI, mongod, or FerretDB: test/support/mongo-server.ts); records POSTed to A at a
 * steady rate, read on B's GET /api/stream. Target: p99 under 1 s.
 *
 * Delivery latency of a record = when this process parsed its event from B's stream (Date.now())
 * − its received_at (A's clock at the POST; same machine, same clock). It spans A's write, B's next
 * poll of the store (CLUSTER_POLL_MS, default 200 ms; B reads up to the instances' lowest write
 * floor, so A's renewal of its floor, which comes with A's own polls, is in it too), and B's fan-out.
 * Records of the first --warmup seconds are left out. Every record is checked to arrive once.
 *
 * FerretDB 1.24 (the server here when there is no mongod) pushes no filter down to its SQLite
 * tables: each poll scans the whole collection, about 0.12 ms a record on 2 cores, so its latency
 * grows with the collection, and the run is kept small (2,000 records by default). On MongoDB the
 * (written_at, _id) index serves the poll whatever the collection's size.
 *
 *   node --import tsx bench/cluster.ts [--seconds 10] [--rate 200] [--batch 10] [--poll-ms 200] [--warmup 2]
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { startMongoServer } from '../test/support/mongo-server.js';
import { spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rate: { type: 'string', default: '200' },
    batch: { type: 'string', default: '10' },
    'poll-ms': { type: 'string', default: '200' },
    warmup: { type: 'string', default: '2' },
  },
});
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const BATCH = Number(values.batch);
const POLL_MS = Number(values['poll-ms']);
const WARMUP_SECONDS = Number(values.warmup);
const PACKS = 10;
const CLI = new URL('../src/cli/main.ts', import.meta.url).pathname;

/** One instance, named `id` in its leases and /health. */
const startInstance = (id: string, env: Record<string, string>) => spawnServer(CLI, ['serve'], { LOG_LEVEL: 'warn', INSTANCE_ID: id, ...env });

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function main(): Promise<void> {
  const server = await startMongoServer();
  // LOG_LEVEL info for the 'listening' line: the service logs it at info.
  const env = { MONGODB_URI: server.uri, DATABASE_NAME: `bench_cluster_${process.pid}`, CLUSTER_POLL_MS: String(POLL_MS), LOG_LEVEL: 'info', ANALYTICS_ENABLED: 'false' };
  const a = await startInstance('bench-a', env);
  const b = await startInstance('bench-b', env);
  const latencies: number[] = [];
  const seen = new Map<string, number>();
  let duplicates = 0;
  let startedAt = 0;

  // B's stream: each event's id and received_at, read from its text.
  const stream = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get(`${b.url}/api/stream?kind=battery-data`, resolve).on('error', reject);
  });
  let text = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => {
    const now = Date.now();
    text += chunk;
    let end: number;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const id = /\nid: (\S+)/.exec(`\n${block}`)?.[1];
      const received = /"received_at":([0-9.e+]+)/.exec(block)?.[1];
      if (id === undefined || received === undefined) continue;
      if (seen.has(id)) duplicates++;
      seen.set(id, (seen.get(id) ?? 0) + 1);
      const at = Number(received) * 1000;
      if (at >= startedAt + WARMUP_SECONDS * 1000) latencies.push(now - at);
    }
  });

  // The producer: open loop, RATE records/s in batches of BATCH to A.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const posted = new Set<string>();
  let failed = 0;
  const post = (body: string) =>
    new Promise<void>((resolve) => {
      const request = http.request(`${a.url}/api/battery-data`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (response) => {
        let answer = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
        response.on('end', () => {
          if (response.statusCode === 200) for (const id of (JSON.parse(answer) as { ids: string[] }).ids) posted.add(id);
          else failed++;
          resolve();
        });
      });
      request.on('error', () => {
        failed++;
        resolve();
      });
      request.end(body);
    });
  startedAt = Date.now();
  const intervalMs = (1000 * BATCH) / RATE;
  const sends: Promise<void>[] = [];
  let n = 0;
  for (let due = startedAt; due < startedAt + SECONDS * 1000; due += intervalMs) {
    const wait = due - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const now = Date.now() / 1000;
    const body = Array.from({ length: BATCH }, () => {
      n++;
      return { battery_id: `bench-${n % PACKS}`, timestamp: now, pack_voltage: 48, pack_current: 1, cell_temp: 25 };
    });
    sends.push(post(JSON.stringify(body)));
  }
  await Promise.all(sends);
  // Everything posted reaches B, or the run says how many did not.
  const deadline = Date.now() + 10_000;
  while ([...posted].some((id) => !seen.has(id)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  const missing = [...posted].filter((id) => !seen.has(id)).length;
  stream.destroy();
  agent.destroy();
  await b.stop();
  await a.stop();
  await server.stop();

  latencies.sort((x, y) => x - y);
  const results = {
    store: server.description,
    seconds: SECONDS,
    rate_records_per_s: RATE,
    batch: BATCH,
    cluster_poll_ms: POLL_MS,
    posted: posted.size,
    failed_posts: failed,
    delivered_on_b: seen.size,
    missing,
    duplicates,
    measured: latencies.length,
    latency_ms: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? NaN },
    collection_records_at_end: posted.size,
    note: server.kind === 'ferretdb' ? 'FerretDB scans the collection at every poll (no filter pushdown): latency grows with the collection size' : undefined,
    target: 'p99 < 1000 ms',
    met: percentile(latencies, 99) < 1000 && missing === 0 && duplicates === 0,
  };
  console.log(JSON.stringify(results, null, 2));
  writeResults('cluster', results);
  if (missing > 0 || duplicates > 0) process.exitCode = 1;
}

await main();
