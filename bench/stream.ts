/**
 * SSE fan-out benchmark (issue 5): 100 subscribers on GET /api/stream while the service ingests
 * 10,000 records/s. Target: delivery latency p99 under 250 ms.
 *
 * Three processes share the machine:
 *   - the service: `serve` (API only, SQLite in a temp dir), spawned as a child;
 *   - the producer: this file again with --producer, spawned as a second child. It POSTs arrays to
 *     /api/battery-data on a fixed schedule (open loop: 100 batches/s of 100 records by default,
 *     each record's `timestamp` its send time), over a few keep-alive connections;
 *   - the subscribers: 100 SSE connections in this process (node:http), which does nothing else
 *     while the producer runs, so its event loop is free to read and parse.
 * Delivery latency of an event = when a subscriber parsed it (Date.now() on the chunk that completed
 * it) − the record's received_at (the server's clock at the POST; same machine, same clock). It
 * spans the server's group-commit write (synchronous=FULL), the fan-out, the socket and the parse.
 * Figures exclude the first --warmup seconds of records (JIT warm-up); the whole run is printed too.
 * Each subscriber checks that each pack's ids arrive strictly increasing (no event twice, none out of
 * order: the stream is in order per pack, as the after-commit stage hands commits on)
 * and counts its events against the records the producer had stored.
 * The subscribers' parse is kept lean (string search for the fields it reads, digits read in place:
 * about 0.3 µs an event, where JSON.parse would cost several times that) because this process parses
 * 100 × 10,000 events a second; the producer's send time (`timestamp`) is read on every tenth
 * subscriber only, for a send→parse figure beside the main one.
 * The CPU each process used over the run, and how busy the whole machine was, are printed, to show
 * who was short of CPU.
 *
 *   node --import tsx bench/stream.ts [--seconds 20] [--subscribers 100] [--rate 10000] [--batch 100]
 */
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnServer, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    producer: { type: 'boolean', default: false },
    url: { type: 'string' },
    seconds: { type: 'string', default: '20' },
    subscribers: { type: 'string', default: '100' },
    rate: { type: 'string', default: '10000' },
    batch: { type: 'string', default: '100' },
    connections: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
  },
});
const SECONDS = Number(values.seconds);
const SUBSCRIBERS = Number(values.subscribers);
const RATE = Number(values.rate);
const BATCH = Number(values.batch);
const CONNECTIONS = Number(values.connections);
const WARMUP_SECONDS = Number(values.warmup);
const PACKS = 10;

// ---------------------------------------------------------------------------------------------
// Producer (child process): open-loop POSTs of arrays on a fixed schedule.

interface ProducerReport {
  type: 'done';
  started_at_ms: number;
  send_seconds: number;
  /** From the first send to the last answer. */
  done_seconds: number;
  batches_sent: number;
  records_sent: number;
  records_stored: number;
  failed_requests: number;
  /** Batches sent later than their slot because CONNECTIONS requests were already waiting. */
  late_batches: number;
  post_p50_ms: number;
  post_p99_ms: number;
  cpu_ms: number;
}

async function produce(url: string): Promise<void> {
  const target = new URL('/api/battery-data', url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const intervalMs = (1000 * BATCH) / RATE;
  const total = Math.round((SECONDS * RATE) / BATCH);
  const postMs: number[] = [];
  let sent = 0;
  let stored = 0;
  let failed = 0;
  let late = 0;
  let inFlight = 0;
  const cpuBefore = process.cpuUsage();
  const started = Date.now();
  process.stdout.write(`${JSON.stringify({ type: 'started', at_ms: started })}\n`);

  const post = (k: number) =>
    new Promise<void>((resolve) => {
      const now = Date.now();
      const body = JSON.stringify(
        Array.from({ length: BATCH }, (_, j) => ({
          timestamp: now / 1000,
          battery_id: `pack-${(k * BATCH + j) % PACKS}`,
          pack_voltage: 380 + ((k + j) % 40),
          pack_current: -12.5 + ((k + j) % 7),
          cell_temp: 25 + ((k + j) % 11) / 2,
        })),
      );
      inFlight++;
      const request = http.request(target, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (response) => {
        response.resume();
        response.on('end', () => {
          inFlight--;
          postMs.push(Date.now() - now);
          if (response.statusCode !== undefined && response.statusCode < 300) stored += BATCH;
          else failed++;
          resolve();
        });
      });
      request.on('error', () => {
        inFlight--;
        failed++;
        resolve();
      });
      request.end(body);
    });

  const pending: Promise<void>[] = [];
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((Date.now() - started) / intervalMs) + 1);
      while (sent < due) {
        // Never more requests waiting than connections: past that the schedule slips, and says so.
        if (inFlight >= CONNECTIONS) {
          late++;
          break;
        }
        pending.push(post(sent++));
      }
      if (sent >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const sendSeconds = (Date.now() - started) / 1000;
  await Promise.all(pending);
  const doneSeconds = (Date.now() - started) / 1000;
  postMs.sort((a, b) => a - b);
  const cpu = process.cpuUsage(cpuBefore);
  const report: ProducerReport = {
    type: 'done',
    started_at_ms: started,
    send_seconds: sendSeconds,
    done_seconds: doneSeconds,
    batches_sent: sent,
    records_sent: sent * BATCH,
    records_stored: stored,
    failed_requests: failed,
    late_batches: late,
    post_p50_ms: percentileOf(postMs, 50),
    post_p99_ms: percentileOf(postMs, 99),
    cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  agent.destroy();
}

function percentileOf(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: 0.25 ms bins up to 120 s; one per phase, shared by all subscribers.

const BIN_MS = 0.25;
class Histogram {
  readonly bins = new Uint32Array(Math.ceil(120_000 / BIN_MS));
  count = 0;
  max = 0;
  negative = 0;
  add(ms: number): void {
    if (ms < 0) {
      this.negative++;
      ms = 0;
    }
    this.count++;
    if (ms > this.max) this.max = ms;
    this.bins[Math.min(this.bins.length - 1, Math.floor(ms / BIN_MS))]!++;
  }
  percentile(p: number): number {
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.bins.length; i++) {
      seen += this.bins[i]!;
      if (seen >= rank && seen > 0) return (i + 1) * BIN_MS; // upper edge of the bin
    }
    return NaN;
  }
  figures() {
    return { events: this.count, p50_ms: +this.percentile(50).toFixed(2), p99_ms: +this.percentile(99).toFixed(2), max_ms: +this.max.toFixed(1) };
  }
}

// ---------------------------------------------------------------------------------------------
// Subscribers (this process).

// The lean parse (see the header): needles for string search, digits read in place.
const ID = '\nid: ';
const TIMESTAMP = '"timestamp":';
const RECEIVED_AT = '"received_at":';
const BATTERY_ID = '"battery_id":"';
const SEND_TIME_EVERY = 10;

/** A non-negative JSON number without exponent (as JSON.stringify writes Unix seconds and ids). */
function numberAt(text: string, at: number): number {
  let whole = 0;
  let c = text.charCodeAt(at);
  while (c >= 48 && c <= 57) {
    whole = whole * 10 + (c - 48);
    c = text.charCodeAt(++at);
  }
  if (c !== 46) return whole;
  let fraction = 0;
  let scale = 1;
  c = text.charCodeAt(++at);
  while (c >= 48 && c <= 57) {
    fraction = fraction * 10 + (c - 48);
    scale *= 10;
    c = text.charCodeAt(++at);
  }
  return whole + fraction / scale;
}

let steadyFrom = Infinity; // ms: received_at of the first event seen + warm-up
const steady = new Histogram();
const all = new Histogram();
const fromSend = new Histogram(); // parse time − the producer's send time (its `timestamp`), steady phase, sampled

class Subscriber {
  events = 0;
  /** Per pack: the id and timestamp of its last event. */
  readonly last = new Map<string, { id: number; timestamp: number }>();
  outOfOrder = 0;
  dropped = false;
  closing = false;
  readonly #readsSendTime: boolean;
  #rest = '';
  #request: http.ClientRequest | undefined;

  constructor(index: number) {
    this.#readsSendTime = index % SEND_TIME_EVERY === 0;
  }

  open(url: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const request = http.get(new URL('/api/stream', url), { agent: false, headers: { accept: 'text/event-stream' } }, (response) => {
        if (response.statusCode !== 200) {
          reject(new Error(`GET /api/stream: ${response.statusCode}`));
          return;
        }
        response.setEncoding('utf8');
        let connected = false;
        response.on('data', (chunk: string) => {
          if (!connected) {
            connected = true;
            resolve();
          }
          this.#parse(chunk);
        });
        response.on('close', () => {
          if (!this.closing) this.dropped = true;
        });
      });
      request.on('error', (error) => {
        if (!this.closing) this.dropped = true;
        reject(error);
      });
      this.#request = request;
    });
  }

  /** Every complete event in the chunk is parsed "now"; a partial one waits for the next chunk. */
  #parse(chunk: string): void {
    const now = Date.now();
    const text = this.#rest === '' ? chunk : this.#rest + chunk;
    const end = text.lastIndexOf('\n\n');
    if (end < 0) {
      this.#rest = text;
      return;
    }
    this.#rest = end + 2 < text.length ? text.slice(end + 2) : '';
    let at = 0;
    for (;;) {
      const idAt = text.indexOf(ID, at);
      if (idAt < 0 || idAt > end) break;
      const id = numberAt(text, idAt + ID.length);
      const receivedAtAt = text.indexOf(RECEIVED_AT, idAt) + RECEIVED_AT.length;
      const receivedAt = numberAt(text, receivedAtAt) * 1000;
      const packAt = text.indexOf(BATTERY_ID, receivedAtAt) + BATTERY_ID.length;
      const pack = text.slice(packAt, text.indexOf('"', packAt));
      // The promise (src/ingest/after-commit.ts): commits in commit order (a later commit's ids are
      // all higher), and within one commit a pack's rows in timestamp order (the producer's POSTs
      // race over several connections, so ids and timestamps need not agree inside a commit). An
      // event is out of order, or a duplicate, when it goes back in both.
      const timestamp = numberAt(text, text.indexOf(TIMESTAMP, idAt) + TIMESTAMP.length);
      const last = this.last.get(pack);
      if (last !== undefined && id <= last.id && (timestamp < last.timestamp || id === last.id)) this.outOfOrder++;
      this.last.set(pack, { id, timestamp });
      at = receivedAtAt;
      this.events++;
      if (steadyFrom === Infinity) steadyFrom = receivedAt + WARMUP_SECONDS * 1000;
      all.add(now - receivedAt);
      if (receivedAt >= steadyFrom) {
        steady.add(now - receivedAt);
        if (this.#readsSendTime) {
          // The record's fields come in a fixed order: _id, timestamp, ..., received_at.
          fromSend.add(now - timestamp * 1000);
        }
      }
    }
  }

  close(): void {
    this.closing = true;
    this.#request?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: this process, the children (from /proc), the whole machine.

function procCpuMs(pid: number): number {
  try {
    // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so split after ')'.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // CLK_TCK is 100 on Linux
  } catch {
    return NaN;
  }
}

function machineCpu(): { busy: number; total: number } {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: total - idle, total };
}

const ms = (t: number) => Math.round(t);

function line(label: string, figures: object): void {
  console.log(`${label.padEnd(46)} ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join('  ')}`);
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg();
  console.log(
    `SSE fan-out benchmark: ${SUBSCRIBERS} subscribers, ${RATE} records/s (${RATE / BATCH} POSTs/s of ${BATCH}, ${PACKS} packs) for ${SECONDS} s; ` +
      `${os.cpus().length} cores, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before the run`,
  );
  console.log('processes: service (`serve`, SQLite, child 1) | producer (POST arrays, child 2) | subscribers + measurement (this process)\n');
  const dataDir = mkdtempSync(path.join(tmpdir(), 'battery-bench-stream-'));
  const service = await spawnServer(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)), ['serve'], {
    DATA_DIR: dataDir,
    RETENTION_DAYS: '0',
    // Every subscriber of this bench connects from 127.0.0.1.
    STREAM_MAX_SUBSCRIBERS_PER_ADDRESS: String(SUBSCRIBERS),
  });
  const subscribers = Array.from({ length: SUBSCRIBERS }, (_, i) => new Subscriber(i));
  try {
    await Promise.all(subscribers.map((s) => s.open(service.url)));
    line('subscribers connected', { count: subscribers.length });

    const window0 = Date.now();
    const serverCpu0 = procCpuMs(service.child.pid!);
    const ownCpu0 = process.cpuUsage();
    const machine0 = machineCpu();
    const producer = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--producer', '--url', service.url, ...forward()], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let report: ProducerReport | undefined;
    createInterface({ input: producer.stdout! }).on('line', (text) => {
      try {
        const message = JSON.parse(text) as { type: string };
        if (message.type === 'done') report = message as ProducerReport;
      } catch {
        // not ours
      }
    });
    await new Promise((resolve) => producer.once('exit', resolve));
    if (report === undefined) throw new Error('the producer did not report');
    const producerDone = Date.now();

    // Let the subscribers catch up with every stored record (or stop making progress).
    const expected = report.records_stored;
    let lastTotal = -1;
    let lastProgress = Date.now();
    for (;;) {
      const live = subscribers.filter((s) => !s.dropped);
      const total = subscribers.reduce((sum, s) => sum + s.events, 0);
      if (live.every((s) => s.events >= expected)) break;
      if (total !== lastTotal) {
        lastTotal = total;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > 5000) break;
      if (Date.now() - producerDone > 60_000) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const drainMs = Date.now() - producerDone;
    const serverCpu = procCpuMs(service.child.pid!) - serverCpu0;
    const own = process.cpuUsage(ownCpu0);
    const machine1 = machineCpu();
    const wallMs = Date.now() - window0;

    const counts = subscribers.map((s) => s.events).sort((a, b) => a - b);
    const dropped = subscribers.filter((s) => s.dropped).length;
    const complete = subscribers.filter((s) => s.events === expected).length;
    const outOfOrder = subscribers.reduce((sum, s) => sum + s.outOfOrder, 0);
    // Stored records over the time from the first send to the last answer: a rate the service sustained.
    const ingestRate = Math.round(report.records_stored / report.done_seconds);
    // In cores: CPU time over wall time, from the producer's spawn to the end of the drain.
    const cores = (cpuMs: number) => +(cpuMs / wallMs).toFixed(2);
    const cpu = {
      service: cores(serverCpu),
      producer: cores(report.cpu_ms),
      subscribers: cores((own.user + own.system) / 1000),
      wall_s: +(wallMs / 1000).toFixed(1),
      machine_busy_pct: Math.round((100 * (machine1.busy - machine0.busy)) / (machine1.total - machine0.total)),
    };
    const steadyFigures = steady.figures();

    line('ingest: records stored', { stored: report.records_stored, sent: report.records_sent, failed_requests: report.failed_requests, late_batches: report.late_batches });
    line('ingest: achieved rate', { records_per_s: ingestRate, target: RATE, post_p50_ms: report.post_p50_ms, post_p99_ms: report.post_p99_ms });
    line(`delivery latency, after ${WARMUP_SECONDS} s warm-up`, steadyFigures);
    line('delivery latency, whole run', all.figures());
    line(`send→parse latency, steady, 1 sub in ${SEND_TIME_EVERY}`, fromSend.figures());
    line('events per subscriber', { expected, min: counts[0], median: counts[Math.floor(counts.length / 2)], max: counts.at(-1), complete: `${complete}/${SUBSCRIBERS}`, out_of_order_or_duplicate: outOfOrder });
    line('subscribers dropped', { dropped, drain_after_producer_ms: drainMs });
    line(`CPU used (cores of ${os.cpus().length}) over the run`, cpu);
    if (all.negative > 0) line('  events parsed before their received_at (clock)', { count: all.negative });
    const met = steadyFigures.p99_ms < 250 && dropped === 0 && complete === SUBSCRIBERS && ingestRate >= RATE * 0.98;
    line('target: p99 < 250 ms, every event to every subscriber, 10,000 records/s', { met: met ? 'yes' : 'no' });

    writeResults('stream', {
      setup: {
        subscribers: SUBSCRIBERS,
        target_records_per_s: RATE,
        batch: BATCH,
        posts_per_s: RATE / BATCH,
        producer_connections: CONNECTIONS,
        packs: PACKS,
        seconds: SECONDS,
        warmup_seconds: WARMUP_SECONDS,
        processes: { service: 'child 1 (serve, SQLite)', producer: 'child 2 (POST arrays)', subscribers: 'bench process (node:http)' },
        load_average_before: loadBefore,
      },
      ingest: { ...report, type: undefined, achieved_records_per_s: ingestRate },
      latency_ms: { steady: steadyFigures, whole_run: all.figures(), send_to_parse_steady: fromSend.figures(), bin_ms: BIN_MS },
      delivery: { expected_per_subscriber: expected, min: counts[0], median: counts[Math.floor(counts.length / 2)], max: counts.at(-1), complete, out_of_order_or_duplicate: outOfOrder, dropped, drain_after_producer_ms: drainMs },
      cpu_cores: cpu,
      target_met: met,
    });
  } finally {
    for (const s of subscribers) s.close();
    await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The options the producer needs, as given to this process. */
function forward(): string[] {
  return ['--seconds', String(SECONDS), '--rate', String(RATE), '--batch', String(BATCH), '--connections', String(CONNECTIONS)];
}

if (values.producer) await produce(values.url!);
else await main();
