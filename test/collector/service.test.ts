/**
 * The collector inside the all-in-one service: frames and messages in through real TCP sockets,
 * read back through the HTTP API (export, latest, /metrics).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import type { Reading } from '../../src/simulator/pack-model.js';
import { startSimulation } from '../../src/simulator/simulate.js';
import type { Service } from '../../src/server.js';
import { startTestService as startService } from '../support/service.js';
import { eventually, random, randomSplit, sendChunks } from './helpers.js';

const NAN_FRAME = Buffer.from('000020410000c07f0000803f0000c841', 'hex');

async function startTestService(t: { after(fn: () => Promise<void>): void }): Promise<Service & { binaryPort: number; jsonPort: number }> {
  const service = await startService({ logLevel: 'error' }, { collector: true });
  t.after(() => service.close());
  return { ...service, binaryPort: service.collector!.binaryPort, jsonPort: service.collector!.jsonPort };
}

async function exported(service: Service, kind: string): Promise<Record<string, unknown>[]> {
  const response = await fetch(`${service.url}/api/${kind}/export?hours=1&format=ndjson`);
  assert.equal(response.status, 200);
  return (await response.text()).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function metric(service: Service, series: string): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

test('thousands of frames over 50 connections, split at random, bad ones mixed in: through the API every good one once, every bad one counted', async (t) => {
  const service = await startTestService(t);
  const rand = random(42);
  const good: number[] = [];
  let bad = 0;
  let partial = 0;
  const streams = Array.from({ length: 50 }, (_, c) => {
    const parts: Buffer[] = [];
    for (let j = 0; j < 100; j++) {
      if (rand() < 0.05) {
        parts.push(NAN_FRAME);
        bad++;
      } else {
        const n = c * 1000 + j;
        parts.push(encodeFrame({ device_time: n, pack_voltage: 380 + j / 8, pack_current: -20, cell_temp: 30 }));
        good.push(n);
      }
    }
    if (c % 10 === 0) {
      parts.push(Buffer.alloc(9));
      partial++;
    }
    return randomSplit(Buffer.concat(parts), rand, 25);
  });
  await Promise.all(streams.map((chunks) => sendChunks(service.binaryPort, chunks, 1)));
  const messages = ['{"pack_voltage": 401, "pack_current": 2, "cell_temp": 29, "battery_id": "pack-3"}', '{"oops": ', '{"hello": 1}'].join('\n');
  await sendChunks(service.jsonPort, [Buffer.from(messages)]);
  await eventually(async () => (await metric(service, 'collector_connections_open{listener="binary"}')) === 0 && (await metric(service, 'collector_connections_open{listener="json"}')) === 0, 'connections closed');
  await service.collector!.drain();

  const records = await exported(service, 'battery-data');
  const frames = records.filter((r) => r.device_time !== undefined);
  assert.deepStrictEqual(frames.map((r) => r.device_time as number).sort((a, b) => a - b), good.sort((a, b) => a - b));
  assert.ok(frames.every((r) => r.battery_id === 'default' && r.source === 'battery_monitor'));
  assert.deepStrictEqual(records.filter((r) => r.device_time === undefined).map((r) => [r.battery_id, r.pack_voltage]), [['pack-3', 401]]);

  assert.equal(await metric(service, 'collector_rejected_total{listener="binary",reason="non_finite"}'), bad);
  assert.equal(await metric(service, 'collector_rejected_total{listener="binary",reason="partial_frame"}'), partial);
  assert.equal(await metric(service, 'collector_rejected_total{listener="json",reason="malformed_json"}'), 1);
  assert.equal(await metric(service, 'collector_rejected_total{listener="json",reason="unknown_kind"}'), 1);
  assert.equal(await metric(service, 'collector_records_stored_total{listener="binary",kind="battery-data"}'), good.length);
  assert.equal(await metric(service, 'collector_connections_total{listener="binary"}'), 50);
});

test("the simulator's frames show up through the API with the values it sent", async (t) => {
  const service = await startTestService(t);
  const sent: Reading[] = [];
  const simulation = await startSimulation({
    host: '127.0.0.1', binaryPort: service.binaryPort, jsonPort: service.jsonPort,
    scenario: 'overheating', packs: 1, rate: 500, count: 90, onReading: (_id, _via, reading) => sent.push(reading),
  });
  await simulation.done;
  await eventually(async () => (await exported(service, 'battery-data')).length === 90 && (await exported(service, 'battery-prediction')).length === 3, 'all stored');
  const latest = (await (await fetch(`${service.url}/api/battery-data/latest`)).json()) as Record<string, number>;
  const byDeviceTime = new Map(sent.map((r) => [Math.fround(r.device_time), r]));
  const reading = byDeviceTime.get(latest.device_time!)!;
  assert.ok(reading !== undefined, 'the latest record is one the simulator sent');
  assert.equal(latest.pack_voltage, Math.fround(reading.pack_voltage));
  assert.equal(latest.pack_current, Math.fround(reading.pack_current));
  assert.equal(latest.cell_temp, Math.fround(reading.cell_temp));
  const perf = await exported(service, 'battery-performance');
  assert.equal(perf.length, 9);
  assert.ok(perf.every((r) => Number.isInteger(r.cycle_count) && r.battery_id === 'default'));
});
