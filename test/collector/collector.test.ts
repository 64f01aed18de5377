import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import { metricValue, renderMetrics } from '../../src/collector/metrics.js';
import { allRecords, closed, connect, eventually, random, randomSplit, sendChunks, settle, startTestCollector } from './helpers.js';
import { freePort } from '../support/free-port.js';

const NAN_FRAME = Buffer.from('000020410000c07f0000803f0000c841', 'hex');
const INF_FRAME = Buffer.from('000020410000c8430000803f0000807f', 'hex');

/** Frame j of connection c: device_time identifies it, exactly (integers below 2^24 are exact in float32). */
const frameOf = (c: number, j: number) => encodeFrame({ device_time: c * 10_000 + j, pack_voltage: 350 + (j % 100) / 4, pack_current: -50 + (c % 40), cell_temp: 20 + (j % 20) / 2 });

test('frames over many connections, split at random offsets with bad frames mixed in: every good one stored once, every bad one counted', async (t) => {
  const tc = await startTestCollector(t);
  const rand = random(20261127);
  const connections = 60;
  const framesPerConnection = 200;
  const expected: number[] = [];
  let nonFinite = 0;
  let partial = 0;
  const streams: Buffer[][] = [];
  for (let c = 0; c < connections; c++) {
    const parts: Buffer[] = [];
    for (let j = 0; j < framesPerConnection; j++) {
      const r = rand();
      if (r < 0.05) {
        parts.push(r < 0.025 ? NAN_FRAME : INF_FRAME);
        nonFinite++;
      } else {
        parts.push(frameOf(c, j));
        expected.push(c * 10_000 + j);
      }
    }
    if (c % 7 === 0) {
      parts.push(frameOf(c, 9999).subarray(0, 1 + (c % 15)));
      partial++;
    }
    streams.push(randomSplit(Buffer.concat(parts), rand, 40));
  }
  // Ten at a time, so that chunk boundaries really reach the collector as separate reads.
  for (let i = 0; i < connections; i += 10) {
    await Promise.all(streams.slice(i, i + 10).map((chunks) => sendChunks(tc.collector.binaryPort, chunks, 1)));
  }
  await settle(tc);

  const records = await allRecords(tc.store, 'battery-data');
  const seen = records.map((r) => r.device_time as number).sort((a, b) => a - b);
  assert.deepStrictEqual(seen, expected.sort((a, b) => a - b));
  for (const sample of records.filter((_, i) => i % 97 === 0)) {
    const id = sample.device_time as number;
    const frame = frameOf(Math.floor(id / 10_000), id % 10_000);
    assert.equal(sample.pack_voltage, frame.readFloatLE(4));
    assert.equal(sample.pack_current, frame.readFloatLE(8));
    assert.equal(sample.cell_temp, frame.readFloatLE(12));
    assert.equal(sample.battery_id, 'default');
    assert.equal(sample.source, 'battery_monitor');
    assert.ok(Math.abs((sample.timestamp as number) - Date.now() / 1000) < 600, 'timestamp is arrival time');
    assert.equal(Math.round((sample.timestamp as number) * 1000) / 1000, sample.timestamp, 'millisecond precision');
  }
  const m = tc.metrics;
  assert.equal(await metricValue(m.rejected, { listener: 'binary', reason: 'non_finite' }), nonFinite);
  assert.equal(await metricValue(m.rejected, { listener: 'binary', reason: 'partial_frame' }), partial);
  assert.equal(await metricValue(m.framesReceived, { listener: 'binary' }), expected.length + nonFinite);
  assert.equal(await metricValue(m.recordsStored, { listener: 'binary', kind: 'battery-data' }), expected.length);
  assert.equal(await metricValue(m.connectionsTotal, { listener: 'binary' }), connections);
  assert.equal(await metricValue(m.connectionsClosed, { listener: 'binary', reason: 'peer' }), connections);

  // Logged once per connection and reason, with the peer; never once per frame.
  const warnings = tc.logs.filter((e) => e.level === 'warn' && e.obj.reason === 'non_finite');
  const peers = new Set(warnings.map((e) => e.obj.peer));
  assert.equal(warnings.length, peers.size);
  assert.ok(warnings.length <= connections && warnings.length > 0);
  assert.match(String(warnings[0]!.obj.peer), /^127\.0\.0\.1:\d+$/);
  assert.equal(tc.logs.filter((e) => e.obj.reason === 'partial_frame').length, partial);

  const text = await renderMetrics(m.registry);
  assert.match(text, new RegExp(`collector_rejected_total\\{listener="binary",reason="non_finite"\\} ${nonFinite}`));
});

test('one byte at a time over one connection', async (t) => {
  const tc = await startTestCollector(t);
  const stream = Buffer.concat([frameOf(1, 1), NAN_FRAME, frameOf(1, 2)]);
  await sendChunks(tc.collector.binaryPort, [...stream].map((b) => Buffer.from([b])));
  await settle(tc);
  const records = await allRecords(tc.store, 'battery-data');
  assert.deepStrictEqual(records.map((r) => r.device_time).sort(), [10_001, 10_002]);
  assert.equal(await metricValue(tc.metrics.rejected, { reason: 'non_finite' }), 1);
});

test('JSON messages are routed, validated and counted; good ones around bad ones arrive', async (t) => {
  const tc = await startTestCollector(t);
  const data = { timestamp: 1732700000.5, pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 };
  const perf = { pack_voltage: 396, pack_current: -10, cell_temp: 30, capacity_remaining: 87.5, cycle_count: 412, age_months: 18, health_score: 92.3, battery_id: 'pack-7' };
  const pred = { timestamp: 1732700002, remaining_life_hours: 15000.5, remaining_cycles: 1200, degradation_rate: 0.021, source: 'ai_model_v2' };
  const text = [
    JSON.stringify(data),
    '{"pack_voltage": 400, ',
    JSON.stringify(perf, null, 2),
    '{"hello": "world"}',
    JSON.stringify(pred) + JSON.stringify({ ...data, timestamp: 1732700003 }),
    '{"pack_voltage": "high", "pack_current": 1, "cell_temp": 2}',
    'not json at all',
    JSON.stringify({ ...data, timestamp: 1732700004, source: 'braces {"}" inside' }),
    '{"pack_voltage": 1',
  ].join('\n');
  await sendChunks(tc.collector.jsonPort, randomSplit(Buffer.from(text), random(7), 30), 1);
  await settle(tc);

  const dataRecords = await allRecords(tc.store, 'battery-data');
  assert.deepStrictEqual(dataRecords.map((r) => r.timestamp), [1732700000.5, 1732700003, 1732700004]);
  assert.equal(dataRecords[2]!.source, 'braces {"}" inside');
  assert.equal(dataRecords[0]!.source, 'battery_monitor');
  assert.equal(dataRecords[0]!.battery_id, 'default');
  assert.equal(dataRecords[0]!.device_time, undefined);
  const perfRecords = await allRecords(tc.store, 'battery-performance');
  assert.equal(perfRecords.length, 1);
  assert.equal(perfRecords[0]!.battery_id, 'pack-7');
  assert.equal(perfRecords[0]!.cycle_count, 412);
  assert.ok(Math.abs((perfRecords[0]!.timestamp as number) - Date.now() / 1000) < 600, 'server time when missing');
  const predRecords = await allRecords(tc.store, 'battery-prediction');
  assert.equal(predRecords.length, 1);
  assert.equal(predRecords[0]!.source, 'ai_model_v2');

  const reasons = async (reason: string) => metricValue(tc.metrics.rejected, { listener: 'json', reason });
  assert.equal(await reasons('malformed_json'), 3); // cut short, not JSON, unfinished at the end
  assert.equal(await reasons('unknown_kind'), 1);
  assert.equal(await reasons('invalid_record'), 1);
  assert.equal(await metricValue(tc.metrics.framesReceived, { listener: 'json' }), 10);
  // A message over 64 KiB ends its connection: limits.test.ts.
  const invalid = tc.logs.find((e) => e.obj.reason === 'invalid_record')!;
  assert.ok(Array.isArray(invalid.obj.detail));
});

test('the battery map names packs by listening port and by peer address', async (t) => {
  const mappedPort = await freePort();
  const tc = await startTestCollector(t, { batteryMap: `port:${mappedPort}=pack-9` });
  assert.deepStrictEqual(tc.collector.mappedPorts, [mappedPort]);
  await sendChunks(mappedPort, [frameOf(2, 1)]);
  await sendChunks(tc.collector.binaryPort, [frameOf(2, 2)]);
  await sendChunks(tc.collector.jsonPort, [Buffer.from('{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3}\n')]);
  await settle(tc);
  const byTime = new Map((await allRecords(tc.store, 'battery-data')).map((r) => [r.device_time ?? 'json', r.battery_id]));
  assert.deepStrictEqual(Object.fromEntries(byTime), { 20001: 'pack-9', 20002: 'default', json: 'default' });

  await tc.collector.close(); // frees the mapped port for the next one
  const tc2 = await startTestCollector(t, { batteryMap: `peer:127.0.0.1=pack-local,port:${mappedPort}=pack-9` });
  await sendChunks(tc2.collector.binaryPort, [frameOf(2, 3)]);
  await sendChunks(mappedPort, [frameOf(2, 4)]);
  await sendChunks(tc2.collector.jsonPort, [Buffer.from('{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3}{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3, "battery_id": "own"}')]);
  await settle(tc2);
  const ids = (await allRecords(tc2.store, 'battery-data')).map((r) => r.battery_id).sort();
  assert.deepStrictEqual(ids, ['own', 'pack-local', 'pack-local', 'pack-local']);
});

test('500 concurrent connections', async (t) => {
  // All from 127.0.0.1: over the default per-address cap (256).
  const tc = await startTestCollector(t, { maxConnectionsPerAddress: 500 });
  const sockets = await Promise.all(Array.from({ length: 500 }, () => connect(tc.collector.binaryPort)));
  await eventually(async () => (await metricValue(tc.metrics.connectionsOpen, { listener: 'binary' })) === 500, '500 open');
  assert.equal(tc.collector.openConnections, 500);
  await Promise.all(
    sockets.map(async (socket, c) => {
      const frames = Buffer.concat(Array.from({ length: 20 }, (_, j) => frameOf(c, j)));
      socket.end(frames);
      await closed(socket);
    }),
  );
  await settle(tc);
  assert.equal((await allRecords(tc.store, 'battery-data')).length, 500 * 20);
  assert.equal(await metricValue(tc.metrics.connectionsRefused), 0);
});

test('a silent connection is closed after the idle timeout, and counted', async (t) => {
  const tc = await startTestCollector(t, { idleTimeoutMs: 200 });
  const silent = await connect(tc.collector.jsonPort);
  await closed(silent);
  await eventually(async () => (await metricValue(tc.metrics.connectionsClosed, { listener: 'json', reason: 'idle_timeout' })) === 1, 'idle close counted');
  assert.ok(tc.logs.some((e) => e.msg === 'closing idle connection' && String(e.obj.peer).startsWith('127.0.0.1:')));
  // A partial frame left by a client that went quiet is counted when the collector closes it.
  const quiet = await connect(tc.collector.binaryPort);
  quiet.write(frameOf(1, 1).subarray(0, 5));
  await closed(quiet);
  await eventually(async () => (await metricValue(tc.metrics.rejected, { listener: 'binary', reason: 'partial_frame' })) === 1, 'partial frame counted');
});

test('connections over the limit are refused and counted; the others keep working', async (t) => {
  const tc = await startTestCollector(t, { maxConnections: 3 });
  const kept = await Promise.all([connect(tc.collector.binaryPort), connect(tc.collector.binaryPort), connect(tc.collector.jsonPort)]);
  await eventually(() => tc.collector.openConnections === 3, '3 open');
  const extra = await Promise.all([connect(tc.collector.binaryPort), connect(tc.collector.jsonPort)]);
  await Promise.all(extra.map(closed));
  assert.equal(await metricValue(tc.metrics.connectionsRefused, { listener: 'binary' }), 1);
  assert.equal(await metricValue(tc.metrics.connectionsRefused, { listener: 'json' }), 1);
  assert.equal(tc.logs.filter((e) => e.level === 'warn' && /too many connections/.test(e.msg ?? '')).length, 1, 'refusals are logged, not once each');
  kept[0]!.end(frameOf(5, 1));
  kept[1]!.end(frameOf(5, 2));
  kept[2]!.end('{"remaining_life_hours": 1, "remaining_cycles": 2, "degradation_rate": 3}\n');
  await Promise.all(kept.map(closed));
  await settle(tc);
  assert.equal((await allRecords(tc.store, 'battery-data')).length, 2);
  assert.equal((await allRecords(tc.store, 'battery-prediction')).length, 1);
});

test('back-pressure: with a tiny ingest queue reading pauses and resumes, and nothing is lost', async (t) => {
  const tc = await startTestCollector(t, {}, { maxPendingRecords: 500, maxRecordsPerWrite: 200 });
  const perConnection = 5000;
  await Promise.all(
    Array.from({ length: 8 }, (_, c) => sendChunks(tc.collector.binaryPort, [Buffer.concat(Array.from({ length: perConnection }, (_, j) => frameOf(c, j)))])),
  );
  await settle(tc);
  assert.equal((await allRecords(tc.store, 'battery-data')).length, 8 * perConnection);
  assert.ok(tc.logs.some((e) => e.msg === 'reading paused: the sink is behind'));
  assert.ok(tc.logs.some((e) => e.msg === 'reading resumed'));
  assert.equal(tc.collector.paused, false);
});

test('close() stores what was received and counts the partial frames of open connections', async (t) => {
  const tc = await startTestCollector(t);
  const socket = await connect(tc.collector.binaryPort);
  socket.write(Buffer.concat([frameOf(4, 1), frameOf(4, 2), frameOf(4, 3).subarray(0, 3)]));
  await eventually(async () => (await metricValue(tc.metrics.framesReceived)) === 2, 'frames read');
  await tc.collector.close();
  await closed(socket);
  assert.equal((await allRecords(tc.store, 'battery-data')).length, 2);
  assert.equal(await metricValue(tc.metrics.rejected, { reason: 'partial_frame' }), 1);
  assert.equal(await metricValue(tc.metrics.connectionsClosed, { reason: 'shutdown' }), 1);
});
