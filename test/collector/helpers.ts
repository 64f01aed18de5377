/** Shared by the collector tests: a real SQLite store in a temp dir, real sockets, a log recorder. */
import net from 'node:net';
import type { TestContext } from 'node:test';
import { startCollector, type CollectorHandle, type CollectorOptions } from '../../src/collector/collector.js';
import type { CollectorLogger } from '../../src/collector/logger.js';
import { createCollectorMetrics, metricValue, type CollectorMetrics } from '../../src/collector/metrics.js';
import { StoreSink, type StoreSinkOptions } from '../../src/ingest/store-sink.js';
import type { KindName, StoredRecord } from '../../src/records/kinds.js';
import { openSqliteStore } from '../../src/store/sqlite-store.js';
import type { Store } from '../../src/store/store.js';
import { tempDir } from '../support/temp-dir.js';
import { mulberry32 } from '../../src/simulator/pack-model.js';

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string | undefined;
}

/** A logger that keeps what it is told, so tests can check what was logged and how often. */
export function recordingLogger(): CollectorLogger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: LogEntry['level']) => (obj: object, msg?: string) => entries.push({ level, obj: obj as Record<string, unknown>, msg });
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export interface TestCollector {
  collector: CollectorHandle;
  store: Store;
  sink: StoreSink;
  metrics: CollectorMetrics;
  logs: LogEntry[];
  dataDir: string;
}

/** A collector on 127.0.0.1, free ports, writing through a real ingest sink into a real SQLite file. */
export async function startTestCollector(
  t: TestContext,
  options: Partial<CollectorOptions> = {},
  sinkOptions: StoreSinkOptions = {},
): Promise<TestCollector> {
  const dataDir = tempDir('collector-test-');
  const store = await openSqliteStore(dataDir);
  const sink = new StoreSink(store, sinkOptions);
  const metrics = createCollectorMetrics();
  const logger = recordingLogger();
  let collector: CollectorHandle | undefined;
  t.after(async () => {
    await collector?.close();
    await sink.close();
    await store.close();
  });
  collector = await startCollector({ host: '127.0.0.1', binaryPort: 0, jsonPort: 0, sink, logger, metrics, ...options });
  return { collector, store, sink, metrics, logs: logger.entries, dataDir };
}

export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Resolves when the socket is closed (by either side). */
export function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once('close', () => resolve());
    socket.on('error', () => {});
  });
}

/** Writes each chunk as its own write (awaiting the kernel between them), then ends and waits for close. */
export async function sendChunks(port: number, chunks: Buffer[], pauseEvery = 0): Promise<void> {
  const socket = await connect(port);
  let i = 0;
  for (const chunk of chunks) {
    await new Promise<void>((resolve, reject) => socket.write(chunk, (error) => (error ? reject(error) : resolve())));
    if (pauseEvery > 0 && ++i % pauseEvery === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  socket.end();
  await closed(socket);
}

/** Polls until `check` is true (no fixed sleeps; gives up after `ms`, which is only a safety net). */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** `promise`, or a rejection naming `what` after `ms` (a safety net: no test waits unbounded). */
export async function within<T>(promise: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every stored record of a kind, oldest first. */
export async function allRecords(store: Store, kind: KindName, batteryId?: string): Promise<StoredRecord[]> {
  const out: StoredRecord[] = [];
  for await (const record of store.exportRange(kind, { from: 0, to: 1e12, ...(batteryId === undefined ? {} : { batteryId }) })) out.push(record);
  return out;
}

/** Waits until the collector has seen every connection close, then until it has handed everything to the store. */
export async function settle(tc: TestCollector): Promise<void> {
  await eventually(async () => (await metricValue(tc.metrics.connectionsOpen)) === 0, 'connections closed');
  await tc.collector.drain();
}

/** A small deterministic random generator (mulberry32), so a failing run can be repeated. */
export const random = mulberry32;

/** `buf` cut at the given offsets (clamped, deduplicated, in order): how TCP might deliver it. */
export function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => Math.min(Math.max(c, 0), buf.length)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(buf.subarray(from, p));
    from = p;
  }
  chunks.push(buf.subarray(from));
  return chunks;
}

/** Cuts a buffer at random offsets into 1..maxPieces chunks. */
export function randomSplit(buf: Buffer, rand: () => number, maxPieces = 8): Buffer[] {
  const pieces = 1 + Math.floor(rand() * maxPieces);
  const cuts = Array.from({ length: pieces - 1 }, () => Math.floor(rand() * (buf.length + 1))).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    if (cut > from) chunks.push(buf.subarray(from, cut));
    from = Math.max(from, cut);
  }
  if (from < buf.length) chunks.push(buf.subarray(from));
  return chunks;
}
