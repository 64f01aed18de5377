/**
 * CPU per single POST: the service's own user + system time (its process, all threads, from
 * /proc/<pid>/stat) over a fixed number of single battery-data POSTs on 50 connections, after a
 * warm-up. Throughput with 50 connections swings with whatever else the machine runs (the commit's
 * fsync sets it); the CPU a request costs much less, so this is the figure to compare two commits by.
 * With --other, the same runs alternate with a second checkout (e.g. a `git worktree` of an older
 * commit, its node_modules linked), so that drift falls on both alike.
 *
 *   node --import tsx bench/post-cpu.ts [--requests 40000] [--rounds 3] [--other /path/to/checkout]
 *
 * Linux only (/proc). Prints the figures and writes bench/results/post-cpu.json.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { load, spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '40000' },
    rounds: { type: 'string', default: '3' },
    other: { type: 'string' },
  },
});
const requests = Number(values.requests);
const rounds = Number(values.rounds);
const HERE = fileURLToPath(new URL('..', import.meta.url));
const checkouts = [HERE, ...(values.other === undefined ? [] : [path.resolve(values.other)])];
const body = JSON.stringify({ pack_voltage: 390, pack_current: -12.5, cell_temp: 25, battery_id: 'pack-1' });

/** User + system CPU of a process so far, in milliseconds (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function once(root: string): Promise<{ cpu_us_per_request: number; requests_per_s: number; p99_ms: number }> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'battery-post-cpu-'));
  const service = await spawnServer(path.join(root, 'src/cli/main.ts'), ['serve'], { DATA_DIR: dataDir, RETENTION_DAYS: '0' });
  try {
    const post = { url: `${service.url}/api/battery-data`, method: 'POST' as const, body, headers: { 'content-type': 'application/json' }, connections: 50 };
    await load({ ...post, amount: Math.ceil(requests / 8) });
    const before = cpuMs(service.child.pid!);
    const figures = await load({ ...post, amount: requests });
    if (figures.errors > 0 || figures.non2xx > 0) throw new Error(`${root}: ${figures.errors} errors, ${figures.non2xx} answers other than 2xx`);
    return { cpu_us_per_request: +(((cpuMs(service.child.pid!) - before) * 1000) / requests).toFixed(1), requests_per_s: figures.requests_per_s, p99_ms: figures.p99_ms };
  } finally {
    await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const runs: Record<string, Awaited<ReturnType<typeof once>>[]> = Object.fromEntries(checkouts.map((root) => [root, []]));
for (let round = 1; round <= rounds; round++) {
  for (const root of checkouts) {
    const figures = await once(root);
    runs[root]!.push(figures);
    console.log(`round ${round}, ${root}: ${figures.cpu_us_per_request} µs of CPU per request (${figures.requests_per_s} req/s, p99 ${figures.p99_ms} ms)`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = Object.fromEntries(checkouts.map((root) => [root, { median_cpu_us_per_request: median(runs[root]!.map((run) => run.cpu_us_per_request)), runs: runs[root] }]));
for (const [root, { median_cpu_us_per_request }] of Object.entries(summary)) console.log(`median, ${root}: ${median_cpu_us_per_request} µs per request`);
writeResults('post-cpu', { requests, rounds, checkouts: summary });
