/**
 * Analytics benchmark: binary-frame ingest into the all-in-one service (collector, ingest sink,
 * SQLite store, alarms, live feed) with battery analytics on and with it off, in alternating rounds.
 * Connections send frames as fast as the collector takes them for --duration seconds; the clock stops
 * when the ingest sink has written every frame received (so analytics' after-commit work is inside
 * it). Prints records/s per round and the ratio on/off (the issue's target: at least 0.9), and writes
 * bench/results/analytics.json.
 *
 * The service runs in this process, beside the load generator: both modes share that cost alike.
 *
 *   node --import tsx bench/analytics.ts [--duration 15] [--connections 20] [--rounds 2]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFrame, FRAME_BYTES } from '../src/collector/binary-decoder.js';
import { loadConfig } from '../src/config.js';
import { startService } from '../src/server.js';
import { writeResults } from './support.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '15' },
    connections: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '2' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log('Usage: node --import tsx bench/analytics.ts [--duration SEC] [--connections N] [--rounds N]\nQuick: --duration 3 --connections 4 --rounds 1');
  process.exit(0);
}
const durationSeconds = Number(values.duration);
const connections = Number(values.connections);
const rounds = Number(values.rounds);

/** One run: frames over `connections` sockets for the duration; records/s until all are written. */
async function run(analytics: boolean): Promise<{ analytics: boolean; records: number; seconds: number; records_per_second: number }> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'bench-analytics-'));
  const config = {
    ...loadConfig({}),
    dataDir,
    apiHost: '127.0.0.1',
    apiPort: 0,
    collectorHost: '127.0.0.1',
    collectorBinaryPort: 0,
    collectorJsonPort: 0,
    logLevel: 'silent' as const,
    retentionDays: 0,
    analyticsEnabled: analytics,
  };
  const service = await startService(config);
  try {
    const port = service.collector!.binaryPort;
    // A pack that charges and discharges: 1,000 frames of a slow sine, sent again and again.
    const chunk = Buffer.alloc(1000 * FRAME_BYTES);
    for (let i = 0; i < 1000; i++) {
      encodeFrame({ device_time: i, pack_voltage: 400 + 20 * Math.sin(i / 100), pack_current: 40 * Math.sin(i / 50), cell_temp: 30 }, chunk, i * FRAME_BYTES);
    }
    let sent = 0;
    const started = performance.now();
    const deadline = started + durationSeconds * 1000;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        const socket = net.connect({ host: '127.0.0.1', port });
        await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
        while (performance.now() < deadline) {
          sent += 1000;
          if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
        }
        // Closed once the collector has read everything and closed its side.
        await new Promise<void>((resolve) => {
          socket.once('close', () => resolve());
          socket.end();
        });
      }),
    );
    // Everything received handed to the sink, then written.
    await service.collector!.close();
    await service.app.ingest.drain();
    const seconds = (performance.now() - started) / 1000;
    const records = (await service.app.store.batteries()).reduce((n, battery) => n + battery.counts['battery-data'], 0);
    if (records < sent) console.warn(`  ${sent - records} frames not stored`);
    return { analytics, records, seconds: Math.round(seconds * 100) / 100, records_per_second: Math.round(records / seconds) };
  } finally {
    await service.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const results: Awaited<ReturnType<typeof run>>[] = [];
for (let round = 0; round < rounds; round++) {
  for (const analytics of round % 2 === 0 ? [false, true] : [true, false]) {
    const result = await run(analytics);
    console.log(`round ${round + 1}, analytics ${analytics ? 'on ' : 'off'}: ${result.records} records in ${result.seconds} s, ${result.records_per_second} records/s`);
    results.push(result);
  }
}
const mean = (on: boolean) => {
  const rows = results.filter((r) => r.analytics === on);
  return rows.reduce((sum, r) => sum + r.records_per_second, 0) / rows.length;
};
const ratio = Math.round((mean(true) / mean(false)) * 1000) / 1000;
console.log(`\nanalytics on / off: ${ratio} (target >= 0.9)`);
writeResults('analytics', { duration_seconds: durationSeconds, connections, rounds: results, ratio_on_off: ratio });
