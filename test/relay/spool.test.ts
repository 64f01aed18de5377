import assert from 'node:assert/strict';
import { once } from 'node:events';
import { appendFileSync, readdirSync, readFileSync, symlinkSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createCollectorMetrics, metricValue } from '../../src/collector/metrics.js';
import { recordLine, Spool, SpoolFullError, type SpoolBatch } from '../../src/relay/spool.js';
import { recordingLogger, within } from '../collector/helpers.js';
import { batchOf, type TestRecord } from '../store/conformance.js';
import { tempDir } from '../support/temp-dir.js';

const record = (n: number): TestRecord => ({
  timestamp: 1732700000 + n / 1000,
  source: 'battery_monitor',
  battery_id: 'pack-1',
  device_time: n,
  pack_voltage: 350 + (n % 100) / 8,
  pack_current: -n % 50,
  cell_temp: 25.5,
});
/** Records n of [from, to) in one battery-data batch. */
const range = (from: number, to: number) => batchOf('battery-data', Array.from({ length: to - from }, (_, i) => record(from + i)));
const lineOf = (input: TestRecord) => recordLine(batchOf('battery-data', [input]), 0);
const parse = (batch: SpoolBatch) => JSON.parse(batch.body.toString()) as Record<string, unknown>[];

/** Takes every batch of a kind, acknowledging each, and answers their records' device_time in order. */
async function drainAll(spool: Spool, kind: 'battery-data' = 'battery-data'): Promise<{ times: number[]; batches: SpoolBatch[] }> {
  const times: number[] = [];
  const batches: SpoolBatch[] = [];
  for (;;) {
    const batch = await spool.nextBatch(kind);
    if (batch === null) return { times, batches };
    batches.push(batch);
    const records = parse(batch);
    assert.equal(records.length, batch.end - batch.start);
    times.push(...records.map((r) => r.device_time as number));
    await spool.ack(batch);
  }
}

test('records come back in order, in the API shape, in batches keyed by position', async () => {
  const dir = tempDir('spool-');
  const spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  await spool.submit(range(0, 3));
  await spool.submit(batchOf('battery-prediction', [{ timestamp: 1732700000, source: 'battery_monitor', battery_id: 'pack-1', remaining_life_hours: 1, remaining_cycles: 2, degradation_rate: 0.5 }]));
  assert.deepStrictEqual(spool.depth().byKind, { 'battery-data': 3, 'battery-performance': 0, 'battery-prediction': 1 });
  const batch = (await spool.nextBatch('battery-data'))!;
  assert.equal(batch.start, 0);
  assert.equal(batch.end, 3);
  assert.equal(batch.key, `spool-${spool.id}-battery-data-0`);
  assert.deepStrictEqual(parse(batch)[1], {
    timestamp: 1732700000.001,
    source: 'battery_monitor',
    battery_id: 'pack-1',
    device_time: 1,
    pack_voltage: 350.125,
    pack_current: -1,
    cell_temp: 25.5,
  });
  assert.equal(lineOf(record(1)), JSON.stringify(parse(batch)[1]));
  // Until acknowledged, the same batch comes back.
  const again = (await spool.nextBatch('battery-data'))!;
  assert.deepStrictEqual([again.start, again.end, again.key], [0, 3, batch.key]);
  await spool.ack(again);
  assert.equal(await spool.nextBatch('battery-data'), null);
  const prediction = (await spool.nextBatch('battery-prediction'))!;
  assert.deepStrictEqual(parse(prediction), [{ timestamp: 1732700000, source: 'battery_monitor', battery_id: 'pack-1', remaining_life_hours: 1, remaining_cycles: 2, degradation_rate: 0.5 }]);
  await spool.ack(prediction);
  assert.equal(spool.depth().records, 0);
  await spool.close();
});

test('segments roll over, batches stay within a segment and hold at most 10,000 records, acknowledged segments are deleted', async () => {
  const dir = tempDir('spool-');
  const spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024, segmentBytes: 256 * 1024 });
  // Submissions of the same turn share one write and one sync.
  await Promise.all(Array.from({ length: 30 }, (_, i) => spool.submit(range(i * 1000, (i + 1) * 1000))));
  const segments = readdirSync(path.join(dir, 'battery-data')).filter((n) => n.endsWith('.seg'));
  assert.ok(segments.length > 5, `${segments.length} segments`);
  const { times, batches } = await drainAll(spool);
  assert.deepStrictEqual(times, Array.from({ length: 30_000 }, (_, i) => i));
  for (let i = 1; i < batches.length; i++) assert.equal(batches[i]!.start, batches[i - 1]!.end);
  assert.ok(batches.every((b) => b.end - b.start <= 10_000));
  const left = readdirSync(path.join(dir, 'battery-data')).filter((n) => n.endsWith('.seg'));
  assert.equal(left.length, 1, 'only the segment being appended to is kept');
  // A fully acknowledged last segment is replaced on the next append, and positions go on.
  await spool.submit(range(30_000, 30_010));
  const next = (await spool.nextBatch('battery-data'))!;
  assert.deepStrictEqual([next.start, next.end], [30_000, 30_010]);
  assert.deepStrictEqual(readdirSync(path.join(dir, 'battery-data')).filter((n) => n.endsWith('.seg')), ['00000000000000030000.seg']);
  await spool.close();
});

test('after a restart, unacknowledged records are still there and the batch in flight is resent exactly', async () => {
  const dir = tempDir('spool-');
  let spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  await spool.submit(range(0, 100));
  const first = (await spool.nextBatch('battery-data'))!;
  await spool.ack(first);
  await spool.submit(range(100, 150));
  const inFlight = (await spool.nextBatch('battery-data'))!; // "sent", answer lost
  assert.deepStrictEqual([inFlight.start, inFlight.end], [100, 150]);
  await spool.close();

  spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  await spool.submit(range(150, 400));
  const resent = (await spool.nextBatch('battery-data'))!;
  assert.deepStrictEqual([resent.start, resent.end, resent.key], [inFlight.start, inFlight.end, inFlight.key]);
  assert.deepStrictEqual(resent.body, inFlight.body);
  await spool.ack(resent);
  const { times } = await drainAll(spool);
  assert.deepStrictEqual(times, Array.from({ length: 250 }, (_, i) => 150 + i));
  const id = spool.id;
  await spool.close();
  spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  assert.equal(spool.id, id, 'the spool keeps its id');
  assert.equal(spool.depth().records, 0);
  await spool.submit(range(400, 401));
  assert.equal((await spool.nextBatch('battery-data'))!.start, 400, 'positions are never reused');
  await spool.close();
});

test('a torn tail left by a crash is cut on open; positions go on from the last whole record', async () => {
  const dir = tempDir('spool-');
  const logger = recordingLogger();
  let spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024 });
  await spool.submit(range(0, 10));
  await spool.close();
  const segment = path.join(dir, 'battery-data', '00000000000000000000.seg');
  appendFileSync(segment, Buffer.concat([Buffer.from(lineOf(record(10)).slice(0, 30)), Buffer.alloc(100), Buffer.from('\n')]));
  spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024, logger });
  assert.ok(logger.entries.some((e) => e.level === 'warn' && /torn tail/.test(e.msg ?? '')));
  assert.equal(readFileSync(segment, 'utf8').split('\n').length, 11);
  await spool.submit(range(10, 12));
  const { times } = await drainAll(spool);
  assert.deepStrictEqual(times, Array.from({ length: 12 }, (_, i) => i));
  await spool.close();
});

test('bounded: warnings at 50, 80 and 95 % full; when full new records are refused, never dropped silently', async () => {
  const dir = tempDir('spool-');
  const logger = recordingLogger();
  const metrics = createCollectorMetrics();
  const maxBytes = 1024 * 1024;
  const spool = await Spool.open(dir, { maxBytes, logger, metrics, segmentBytes: 64 * 1024 });
  let accepted = 0;
  let refused = 0;
  for (let i = 0; refused === 0; i++) {
    try {
      await spool.submit(range(i * 100, (i + 1) * 100));
      accepted += 100;
    } catch (error) {
      assert.ok(error instanceof SpoolFullError);
      assert.equal(error.refused, true);
      assert.equal(error.reason, 'spool_full');
      // What fitted was taken (and is durable); the rest is refused.
      accepted += error.accepted;
      refused += 100 - error.accepted;
    }
  }
  assert.ok(spool.usedBytes <= maxBytes && spool.usedBytes > maxBytes - 200, `${spool.usedBytes} bytes used`);
  await assert.rejects(spool.submit(range(0, 1)), (error: SpoolFullError) => error.accepted === 0);
  refused += 1;
  const warnings = logger.entries.filter((e) => e.level === 'warn').map((e) => e.msg ?? '');
  assert.deepStrictEqual(warnings.filter((m) => /% full/.test(m)).map((m) => m.slice(0, 9)), ['spool 50%', 'spool 80%', 'spool 95%']);
  assert.ok(warnings.some((m) => /spool full/.test(m)));
  assert.equal(await metricValue(metrics.spoolRecords), accepted);
  assert.ok((await metricValue(metrics.spoolBytes)) > maxBytes * 0.9);
  // Once the API takes some, there is room again.
  const batch = (await spool.nextBatch('battery-data'))!;
  await spool.ack(batch);
  const { times } = await drainAll(spool);
  assert.equal(times.length + (batch.end - batch.start), accepted);
  await spool.submit(range(1_000_000, 1_000_100));
  assert.equal(spool.depth().records, 100);
  await spool.close();
});

test('property: a spooled line is the JSON of the record in the API shape, whatever its strings and numbers', async () => {
  const { default: fc } = await import('fast-check');
  const finite = fc.double({ noNaN: true, noDefaultInfinity: true });
  fc.assert(
    fc.property(
      fc.record({ timestamp: finite, source: fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }), battery_id: fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/), device_time: fc.option(finite, { nil: undefined }), a: finite, b: finite }),
      (r) => {
        const expected = { timestamp: r.timestamp, source: r.source, battery_id: r.battery_id, ...(r.device_time === undefined ? {} : { device_time: r.device_time }), pack_voltage: r.a, pack_current: r.b, cell_temp: 1 };
        assert.equal(lineOf(expected), JSON.stringify(expected));
      },
    ),
    { numRuns: 2000 },
  );
});

test("a failed disk write holds the collector's records and writes them, in order, once the disk takes them again", { timeout: 60_000 }, async () => {
  const dir = tempDir('spool-');
  const logger = recordingLogger();
  const spool = await Spool.open(dir, { maxBytes: 64 * 1024 * 1024, logger });
  // The first segment is /dev/full: every write to it fails with ENOSPC, as on a full disk.
  const segment = path.join(dir, 'battery-data', '00000000000000000000.seg');
  symlinkSync('/dev/full', segment);
  const collector = new AbortController();
  const held = spool.submit(range(0, 10), { retryUntil: collector.signal });
  const drained = once(spool, 'drained');
  while (!spool.full) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(logger.entries.some((e) => e.level === 'error' && e.msg === 'spool write failed'));
  // A submission that did not ask to be retried fails with the disk.
  await assert.rejects(spool.submit(range(10, 11)), /ENOSPC/);
  // The disk has room again.
  unlinkSync(segment);
  await Promise.all([held, drained]);
  assert.equal(spool.full, false);
  await spool.submit(range(11, 12));
  const { times } = await drainAll(spool);
  assert.deepStrictEqual(times, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
  await spool.close();
});

test('whenEmpty() resolves once every record submitted is acknowledged, and at once when none waits', async () => {
  const spool = await Spool.open(tempDir('spool-empty-'), { maxBytes: 64 * 1024 * 1024 });
  await within(spool.whenEmpty(), 'empty at once');
  let empty = false;
  const submitted = spool.submit(range(0, 5));
  const waiting = spool.whenEmpty().then(() => (empty = true));
  await submitted;
  const batch = (await spool.nextBatch('battery-data'))!;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(empty, false, 'durable but not yet acknowledged');
  await spool.ack(batch);
  await within(waiting, 'empty after the ack');
  assert.equal(spool.depth().records, 0);
  await spool.close();
});
