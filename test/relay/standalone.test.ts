import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import { startStandaloneCollector } from '../../src/relay/collect.js';
import { createCollectorMetrics, metricValue } from '../../src/collector/metrics.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { Service } from '../../src/server.js';
import { startTestService } from '../support/service.js';
import { relayEnv } from '../support/relay-env.js';
import { tempDir } from '../support/temp-dir.js';
import { allRecords, eventually, recordingLogger, sendChunks, within } from '../collector/helpers.js';

/**
 * Frame n. The API does not keep device_time from a POST yet, so n is also carried exactly in
 * pack_voltage (300 + n/64 is exact in float32 for n < 2^17).
 */
const frame = (n: number) => encodeFrame({ device_time: n, pack_voltage: 300 + n / 64, pack_current: -(n % 90), cell_temp: 20 + (n % 30) });
const numberOf = (record: Record<string, unknown>) => ((record.pack_voltage as number) - 300) * 64;

const settings = (dataDir: string, extra: Record<string, string> = {}) => relayEnv(dataDir, { LOG_LEVEL: 'info', ...extra });

async function startApi(port: number, dataDir: string): Promise<Service> {
  return startTestService({ apiPort: port, dataDir, logLevel: 'warn' });
}

/**
 * The API's port while the API is down: held by a listener that answers 503 (to the relay, an API
 * that is away), so that no other socket (another test's, or one of this process's listeners on
 * port 0) can take it meanwhile; the test frees it just before the API binds it. A port only looked
 * up free and left unbound for the whole outage could be taken, and the relay would then talk to
 * the wrong server. (A listener that drops connections at once would not do: undici's fetch may
 * then wait for its whole timeout.)
 */
async function holdPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = http.createServer((request, response) => {
    request.resume();
    response.writeHead(503, { 'content-type': 'application/json', connection: 'close' }).end('{"detail":"the API is down (test)"}');
  });
  await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return {
    port: (holder.address() as net.AddressInfo).port,
    release: () =>
      new Promise((resolve) => {
        holder.close(() => resolve());
        holder.closeAllConnections();
      }),
  };
}

test('API down while records arrive, then up: every record delivered once, in order', async (t) => {
  const held = await holdPort();
  const apiPort = held.port;
  const config: Config = loadConfig(settings(tempDir('standalone-')));
  const logger = recordingLogger();
  const metrics = createCollectorMetrics();
  const standalone = await startStandaloneCollector(config, { apiUrl: `http://127.0.0.1:${apiPort}`, logger, metrics, metricsPort: 0 });
  let api: Service | undefined;
  t.after(async () => {
    await standalone.close();
    await api?.close();
    await held.release();
  });
  const { binaryPort, jsonPort } = standalone.collector;

  const total = 12_000;
  await Promise.all(Array.from({ length: 6 }, (_, c) => sendChunks(binaryPort, [Buffer.concat(Array.from({ length: total / 6 }, (_, j) => frame(c * (total / 6) + j)))])));
  const messages = Array.from({ length: 50 }, (_, i) => JSON.stringify({ timestamp: 1732700000 + i, remaining_life_hours: i, remaining_cycles: 10, degradation_rate: 0.01, battery_id: 'pack-2' })).join('\n');
  await sendChunks(jsonPort, [Buffer.from(messages)]);
  await eventually(() => standalone.spool.depth().records === total + 50, 'all records in the spool');
  await eventually(() => logger.entries.some((e) => /does not take records/.test(e.msg ?? '')), 'the outage is noticed');
  assert.equal(await metricValue(metrics.recordsStored, { listener: 'binary' }), total, 'accepted once durable in the spool');

  // Metrics are served by the collector's own listener in this mode.
  const text = await (await fetch(`http://127.0.0.1:${standalone.metricsPort}/metrics`)).text();
  assert.match(text, new RegExp(`collector_spool_records ${total + 50}`));

  await held.release();
  api = await startApi(apiPort, tempDir('standalone-api-'));
  await within(standalone.forwarder.idle(), 'the spool delivered', 60_000);
  const data = await allRecords(api.app.store, 'battery-data');
  assert.equal(data.length, total);
  assert.deepStrictEqual(new Set(data.map(numberOf)).size, total, 'no duplicates');
  // In order: ids (insertion order) follow the spool order within each connection's run.
  const predictions = await allRecords(api.app.store, 'battery-prediction', 'pack-2');
  assert.deepStrictEqual(predictions.sort((a, b) => Number(a._id) - Number(b._id)).map((r) => r.timestamp), Array.from({ length: 50 }, (_, i) => 1732700000 + i));
  assert.equal(await metricValue(metrics.forwardedRecords), total + 50);
  assert.ok(logger.entries.some((e) => /takes records again/.test(e.msg ?? '')));
  // Through the HTTP API, as a reader sees it.
  const latest = await (await fetch(`${api.url}/api/battery-prediction/latest?battery_id=pack-2`)).json() as Record<string, unknown>;
  assert.equal(latest.remaining_life_hours, 49);
});

test("answers lost on the way back: the retried batches are not stored twice", async (t) => {
  const api = await startApi(0, tempDir('standalone-lossy-api-'));
  const apiPort = Number(new URL(api.url).port);
  // A real TCP proxy in front of the API that cuts the connection as the first answers come back:
  // the API has stored those batches, the collector never hears so, and sends them again.
  let toDrop = 3;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: apiPort });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk) => {
      if (toDrop > 0) {
        toDrop--;
        client.destroy();
        upstream.destroy();
      } else client.write(chunk);
    });
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const proxyPort = (proxy.address() as net.AddressInfo).port;
  const config: Config = loadConfig(settings(tempDir('standalone-lossy-'), { SPOOL_MAX_BYTES: String(4 * 1024 * 1024) }));
  const metrics = createCollectorMetrics();
  const standalone = await startStandaloneCollector(config, { apiUrl: `http://127.0.0.1:${proxyPort}`, logger: recordingLogger(), metrics });
  t.after(async () => {
    await standalone.close();
    const closed = new Promise((resolve) => proxy.close(resolve));
    for (const socket of sockets) socket.destroy(); // idle keep-alive connections would hold close() up
    await closed;
    await api.close();
  });
  const total = 20_000;
  await Promise.all(Array.from({ length: 4 }, (_, c) => sendChunks(standalone.collector.binaryPort, [Buffer.concat(Array.from({ length: total / 4 }, (_, j) => frame(c * (total / 4) + j)))])));
  await eventually(async () => (await metricValue(metrics.recordsStored)) === total, 'all in the spool');
  await within(standalone.forwarder.idle(), 'the spool delivered', 60_000);
  assert.equal(toDrop, 0, 'three answers were lost');
  assert.ok((await metricValue(metrics.forwardRequests, { outcome: 'retry' })) >= 3);
  const stored = await allRecords(api.app.store, 'battery-data');
  assert.equal(stored.length, total);
  assert.equal(new Set(stored.map(numberOf)).size, total);
});

// ---- kill -9 ----

const CHILD = fileURLToPath(new URL('./fixtures/collect-child.ts', import.meta.url));

interface Child {
  process: ChildProcess;
  binaryPort: number;
  metricsPort: number;
  lines: Record<string, unknown>[];
}

async function startChild(env: Record<string, string>, apiUrl: string): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, '--api', apiUrl, '--metrics-port', '0', '--metrics-host', '127.0.0.1'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: Record<string, unknown>[] = [];
  let binaryPort = 0;
  let metricsPort = 0;
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`collector child exited early (${code})`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      lines.push(entry);
      if (entry.msg === 'collector listening' && entry.setting === 'COLLECTOR_BINARY_PORT') binaryPort = entry.port as number;
      if (entry.msg === 'collector forwarding to the API through the spool') {
        metricsPort = entry.metricsPort as number;
        resolve();
      }
    });
  });
  await within(ready, 'the collector child started', 60_000);
  return { process: child, binaryPort, metricsPort, lines };
}

async function childMetric(child: Child, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${child.metricsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name)) sum += Number(line.split(' ').at(-1));
  return sum;
}

function kill9(child: Child): Promise<void> {
  return new Promise((resolve) => {
    child.process.once('exit', () => resolve());
    child.process.kill('SIGKILL');
  });
}

/** Records of a kind in the store, from the per-pack summary (cheap to poll). */
async function storedCount(api: Service, kind: 'battery-data' = 'battery-data'): Promise<number> {
  return (await api.app.store.batteries()).reduce((n, b) => n + (b.counts[kind] ?? 0), 0);
}

test('kill -9 with a full spool, restart: nothing acknowledged to the spool is lost, nothing is stored twice', async (t) => {
  const dataDir = tempDir('standalone-kill-');
  const env = settings(dataDir, { SPOOL_MAX_BYTES: String(12 * 1024 * 1024) });
  const held = await holdPort();
  const apiPort = held.port;
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const children: Child[] = [];
  let api: Service | undefined;
  t.after(async () => {
    for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) await kill9(c);
    await api?.close();
    await held.release();
  });

  // 1. The API is away: fill the spool past its limit.
  const first = await startChild(env, apiUrl);
  children.push(first);
  const sent = 100_000;
  const perConnection = sent / 4;
  await Promise.all(
    Array.from({ length: 4 }, (_, c) => sendChunks(first.binaryPort, [Buffer.concat(Array.from({ length: perConnection }, (_, j) => frame(c * perConnection + j)))])),
  );
  const accepted = () => childMetric(first, 'collector_records_stored_total');
  const refused = () => childMetric(first, 'collector_rejected_total{listener="binary",reason="spool_full"}');
  await eventually(async () => (await accepted()) + (await refused()) === sent, 'every record accepted or refused');
  const acceptedCount = await accepted();
  assert.ok((await refused()) > 0 && acceptedCount > 10_000, `accepted ${acceptedCount}: the spool filled up`);
  assert.ok(first.lines.some((e) => /spool 95% full/.test(String(e.msg))));
  await kill9(first);

  // 2. The API is back; kill the collector again while it is delivering.
  await held.release();
  api = await startApi(apiPort, tempDir('standalone-kill-api-'));
  const second = await startChild(env, apiUrl);
  children.push(second);
  await eventually(async () => (await storedCount(api!)) > 0, 'delivery under way', 60_000);
  await kill9(second);
  const midway = await storedCount(api);

  // 3. Restart: the rest arrives, and what was delivered before is not stored again.
  const third = await startChild(env, apiUrl);
  children.push(third);
  await eventually(async () => (await childMetric(third, 'collector_spool_records')) === 0, 'spool delivered', 60_000);
  const stored = await allRecords(api.app.store, 'battery-data');
  const numbers = stored.map(numberOf);
  t.diagnostic(`accepted ${acceptedCount} of ${sent}; ${midway} delivered before the second kill`);
  assert.equal(stored.length, acceptedCount);
  assert.equal(new Set(numbers).size, acceptedCount, 'nothing stored twice');
  assert.ok(numbers.every((n) => Number.isInteger(n) && n >= 0 && n < sent));
  third.process.kill('SIGTERM');
  await within(new Promise((resolve) => third.process.once('exit', resolve)), 'the collector child stopped on SIGTERM', 30_000);
  assert.equal(third.process.exitCode, 0);
});
