/**
 * Edge protocol v2 ingest against legacy binary ingest, in the same run, on the same service
 * (`battery-monitor run` in its own process, SQLite), over the same number of connections.
 *
 * 1. Legacy: --connections sockets send 16-byte binary frames to COLLECTOR_BINARY_PORT for
 *    --duration seconds, as fast as they are taken (64 KiB writes, as bench/collector-ingest.ts);
 *    the clock stops once every frame is readable through the API.
 * 2. v2: as many devices (streams of one pack, as the legacy frames all go to one) handshake on COLLECTOR_V2_PORT and send
 *    battery-data frames (48 bytes, 1,024 a write) for as long; each keeps at most --window frames
 *    unacknowledged, as a device with a bounded queue does. The clock stops once every frame is
 *    acknowledged (an ack means durable in the store), and the count is checked through the API.
 *    Ack latency: from the write of a chunk to the ack covering its last frame, p50/p99/max under
 *    that load.
 *
 * Prints the figures and writes bench/results/v2-ingest.json.
 *
 *   node --import tsx bench/v2-ingest.ts --duration 10
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFrame as encodeLegacyFrame, FRAME_BYTES as LEGACY_FRAME_BYTES } from '../src/collector/binary-decoder.js';
import { ACK_BYTES, ANSWER_BYTES, crc32cOf, encodeFrame, encodeHandshake, parseAck, parseAnswer } from '../src/collector/v2/wire.js';
import { serviceCommand, spawnNode, writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '30' },
    connections: { type: 'string', default: '50' },
    window: { type: 'string', default: '4096' },
    tsx: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(`Usage: node --import tsx bench/v2-ingest.ts [options]

v2 ingest against legacy binary ingest on one service, and v2 ack latency under that load;
figures to bench/results/v2-ingest.json (or BENCH_RESULTS_DIR).

  --duration S      seconds of load for each protocol (default 30)
  --connections N   connections (devices) for each protocol (default 50)
  --window N        v2: frames a device keeps unacknowledged at most (default 4096); legacy: the same bound times --connections on frames sent and not yet readable
  --tsx             run the service from the TypeScript sources instead of a build
  -h, --help        this text`);
  process.exit(0);
}
const seconds = Number(values.duration);
const connections = Number(values.connections);
const windowFrames = Number(values.window);

const childArgs = serviceCommand(values.tsx);

const SPECS_FILE = new URL('../config/battery-specs.json', import.meta.url).pathname;
const round = (x: number, digits = 0) => Math.round(x * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

interface Service {
  child: ChildProcess;
  url: string;
  binaryPort: number;
  v2Port: number;
  stop(): Promise<void>;
}

async function startService(): Promise<Service> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'v2-bench-'));
  const binaryPort = await freePort();
  const v2Port = await freePort();
  const server = await spawnNode([...childArgs, 'run'], {
      DATA_DIR: dataDir,
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      COLLECTOR_HOST: '127.0.0.1',
      COLLECTOR_BINARY_PORT: String(binaryPort),
      COLLECTOR_JSON_PORT: '0',
      COLLECTOR_V2_PORT: String(v2Port),
      LOG_LEVEL: 'info',
      RETENTION_DAYS: '0',
      BATTERY_SPECS_FILE: SPECS_FILE,
  });
  return {
    ...server,
    binaryPort,
    v2Port,
    stop: async () => {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function storedCount(url: string, prefix?: string): Promise<number> {
  const body = (await (await fetch(`${url}/api/batteries`)).json()) as { batteries: { battery_id: string; counts: Record<string, number> }[] };
  return body.batteries.filter((b) => prefix === undefined || b.battery_id.startsWith(prefix)).reduce((n, b) => n + (b.counts['battery-data'] ?? 0), 0);
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** 1. Legacy binary frames until readable through the API. */
async function legacy(service: Service): Promise<Record<string, number>> {
  const chunk = Buffer.alloc(4096 * LEGACY_FRAME_BYTES);
  for (let i = 0; i < 4096; i++) encodeLegacyFrame({ device_time: i / 10, pack_voltage: 380 + (i % 40) / 4, pack_current: -12.5, cell_temp: 25 }, chunk, i * LEGACY_FRAME_BYTES);
  const before = await storedCount(service.url);
  const sockets = await Promise.all(Array.from({ length: connections }, () => connect(service.binaryPort)));
  let sentFrames = 0;
  let readable = before;
  const polling = setInterval(() => void storedCount(service.url).then((count) => (readable = Math.max(readable, count))), 100);
  let running = true;
  const started = performance.now();
  const timer = setTimeout(() => (running = false), seconds * 1000);
  await Promise.all(
    sockets.map(async (socket) => {
      while (running) {
        // The same bound on frames sent and not yet stored as a v2 device's window.
        if (sentFrames - (readable - before) > windowFrames * connections) {
          await sleep(20);
          continue;
        }
        sentFrames += 4096;
        if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
      }
      await new Promise<void>((resolve) => socket.end(resolve));
    }),
  );
  clearTimeout(timer);
  while ((await storedCount(service.url)) - before < sentFrames) await sleep(20);
  const elapsed = (performance.now() - started) / 1000;
  clearInterval(polling);
  return { frames: sentFrames, seconds_until_readable: round(elapsed, 2), records_per_s: Math.round(sentFrames / elapsed) };
}

const V2_CHUNK_FRAMES = 1024;

/** 2. v2 devices until every frame is acknowledged; ack latency per chunk. */
async function v2(service: Service): Promise<Record<string, unknown>> {
  const template = encodeFrame({ type: 1, sequence: 1n, timestamp: 0, fields: { pack_voltage: 390, pack_current: -12.5, cell_temp: 25 } });
  const frameBytes = template.length;
  const latencies: number[] = [];
  let sentFrames = 0;
  let running = true;
  const started = performance.now();
  const timer = setTimeout(() => (running = false), seconds * 1000);
  await Promise.all(
    Array.from({ length: connections }, async (_, device) => {
      const socket = await connect(service.v2Port);
      socket.write(encodeHandshake('bench-v2', BigInt(device + 1)));
      let received = Buffer.alloc(0);
      let acked = 0n;
      let wake: (() => void) | undefined;
      let answered = false;
      /** Per chunk written: its last sequence and when. */
      const inFlight: { last: bigint; at: number }[] = [];
      socket.on('data', (data: Buffer) => {
        received = Buffer.concat([received, data]);
        let at = 0;
        if (!answered) {
          if (received.length < ANSWER_BYTES) return;
          if (parseAnswer(received)?.status !== 0) throw new Error('v2 handshake refused');
          answered = true;
          at = ANSWER_BYTES;
        }
        for (; received.length - at >= ACK_BYTES; at += ACK_BYTES) {
          const sequence = parseAck(received, at);
          if (sequence === undefined) throw new Error('not an ack');
          acked = sequence;
          const now = performance.now();
          while (inFlight.length > 0 && inFlight[0]!.last <= sequence) latencies.push(now - inFlight.shift()!.at);
        }
        received = received.subarray(at);
        wake?.();
      });
      const waitForAcks = () => new Promise<void>((resolve) => (wake = resolve)).then(() => (wake = undefined));
      while (!answered) await Promise.race([waitForAcks(), sleep(50)]);
      let sequence = 0n;
      const chunk = Buffer.alloc(V2_CHUNK_FRAMES * frameBytes);
      while (running) {
        if (Number(sequence - acked) + V2_CHUNK_FRAMES > windowFrames) {
          await Promise.race([waitForAcks(), sleep(50)]);
          continue;
        }
        const now = Date.now() / 1000;
        for (let i = 0; i < V2_CHUNK_FRAMES; i++) {
          const at = i * frameBytes;
          template.copy(chunk, at);
          chunk.writeBigUInt64LE(++sequence, at + 4);
          chunk.writeDoubleLE(now, at + 12);
          chunk.writeDoubleLE(380 + i / 100, at + 20);
          chunk.writeUInt32LE(crc32cOf(chunk, at, at + frameBytes - 4), at + frameBytes - 4);
        }
        inFlight.push({ last: sequence, at: performance.now() });
        sentFrames += V2_CHUNK_FRAMES;
        if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
      }
      while (acked < sequence) await Promise.race([waitForAcks(), sleep(50)]);
      socket.destroy();
    }),
  );
  clearTimeout(timer);
  const elapsed = (performance.now() - started) / 1000;
  const stored = await storedCount(service.url, 'bench-v2');
  if (stored !== sentFrames) throw new Error(`v2: ${sentFrames} frames acknowledged, ${stored} stored`);
  latencies.sort((a, b) => a - b);
  const quantile = (q: number) => round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0, 1);
  return {
    frames: sentFrames,
    seconds_until_acknowledged: round(elapsed, 2),
    records_per_s: Math.round(sentFrames / elapsed),
    ack_latency_ms: { chunks: latencies.length, frames_per_chunk: V2_CHUNK_FRAMES, p50: quantile(0.5), p99: quantile(0.99), max: round(latencies.at(-1) ?? 0, 1) },
  };
}

const service = await startService();
try {
  const legacyFigures = await legacy(service);
  console.log(`legacy binary: ${legacyFigures.records_per_s!.toLocaleString()} records/s over ${connections} connections until readable through the API`);
  const v2Figures = await v2(service);
  const latency = v2Figures.ack_latency_ms as { p50: number; p99: number };
  console.log(
    `v2: ${(v2Figures.records_per_s as number).toLocaleString()} records/s over ${connections} connections until acknowledged (durable); ack latency p50 ${latency.p50} ms, p99 ${latency.p99} ms`,
  );
  const ratio = round((v2Figures.records_per_s as number) / legacyFigures.records_per_s!, 3);
  console.log(`v2 / legacy: ${ratio} (target >= 0.8)`);
  writeResults('v2-ingest', { duration_s: seconds, connections, window_frames: windowFrames, legacy: legacyFigures, v2: v2Figures, v2_to_legacy: ratio });
} finally {
  await service.stop();
}
