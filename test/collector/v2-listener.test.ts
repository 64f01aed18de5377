/**
 * The edge protocol v2 listener inside the all-in-one service (SQLite), through real sockets:
 * handshake answers, frames stored with their device time, cumulative acks, exactly once through a
 * lost ack and a cut mid-frame, a bad CRC, a sequence gap with and without the device's skipped
 * flag, duplicates counted by the store's keys, clock skew, and a stream's newer connection closing
 * its older one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StoredRecord } from '../../src/records/kinds.js';
import { ACK_BYTES, ANSWER_BYTES, encodeAck, encodeFrame, encodeHandshake, FLAG_SKIPPED, parseAnswer, recordKey } from '../../src/collector/v2/wire.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { loadConfig } from '../../src/config.js';
import { randomStreamId, V2Device } from '../support/v2-device.js';
import { closed, eventually, within } from './helpers.js';
import { metricValue } from '../../src/collector/metrics.js';
import { exchange, rawConnection, rejected, startV2Service, stored, v2Metric } from './v2-support.js';

const now = () => Math.round(Date.now()) / 1000;
const reading = (sequence: number, timestamp = now()) => ({ type: 1, timestamp, fields: { pack_voltage: 300 + sequence, pack_current: -1, cell_temp: 25 } });
const frame = (sequence: number, timestamp = now()) => encodeFrame({ ...reading(sequence, timestamp), sequence: BigInt(sequence) });
/** A frame after sequences the device dropped itself. */
const skipping = (sequence: number) => encodeFrame({ ...reading(sequence), sequence: BigInt(sequence), flags: FLAG_SKIPPED });
const voltages = (records: readonly StoredRecord[]) => records.map((r) => Number(r.pack_voltage) - 300).sort((a, b) => a - b);

describe('edge protocol v2 listener', () => {
  it('answers a handshake: a new stream resumes after 0; a bad version, pack id or CRC is refused with its status and closed', async (t) => {
    const service = await startV2Service(t);
    const device = new V2Device('pack-1');
    const answer = await device.connect(service.v2Port);
    assert.deepEqual(answer, { status: 0, resumeAfter: 0n, maxFrameBytes: 16436 });
    device.disconnect();

    const good = encodeHandshake('pack-1', 7n);
    const version3 = encodeHandshake('pack-1', 7n, 3);
    const badId = encodeHandshake('pack 1', 7n);
    const badCrc = Buffer.from(good);
    badCrc[badCrc.length - 1]! ^= 1;
    for (const [bytes, status, what] of [
      [version3, 1, 'version 3'],
      [badId, 2, 'a space in the pack id'],
      [badCrc, 3, 'a bad CRC'],
      [encodeHandshake('pack-1', 0n), 3, 'stream id 0'],
      [Buffer.from('GET / HTTP/1.1\r\n\r\n'), 3, 'not v2 at all'],
    ] as const) {
      const received = await exchange(service.v2Port, bytes, what);
      assert.equal(received.length, ANSWER_BYTES, what);
      assert.equal(parseAnswer(received)?.status, status, what);
    }
    assert.equal(await rejected(service, 'bad_handshake'), 5);
  });

  it('stores every kind with the device time (battery-data keeps it as device_time too), acknowledges cumulatively, and resumes after the highest acked', async (t) => {
    const service = await startV2Service(t);
    const device = new V2Device('pack-kinds');
    await device.connect(service.v2Port);
    const at = now() - 60;
    device.push({ type: 1, timestamp: at, fields: { pack_voltage: 398.25, pack_current: -12.5, cell_temp: 31.25 }, cell_voltages: [3.7, 3.6], cell_temps: [30] });
    device.push({
      type: 2,
      timestamp: at + 1,
      fields: { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2, capacity_remaining: 87.5, cycle_count: 412, age_months: 18, health_score: 92.3 },
    });
    device.push({ type: 3, timestamp: at + 2, fields: { remaining_life_hours: 15000.5, remaining_cycles: 1200, degradation_rate: 0.021 } });
    await device.allAcked();
    assert.equal(device.acked, 3n);

    const [data] = await stored(service, 'battery-data', 'pack-kinds');
    assert.equal(data?.timestamp, at);
    assert.equal(data?.device_time, at);
    assert.deepEqual(data?.cell_voltages, [3.7, 3.6]);
    assert.equal(data?.cell_voltage_delta !== undefined, true);
    assert.equal(data?.source, 'battery_monitor');
    const [performance] = await stored(service, 'battery-performance', 'pack-kinds');
    assert.equal(performance?.timestamp, at + 1);
    assert.equal(performance?.cycle_count, 412);
    const [prediction] = await stored(service, 'battery-prediction', 'pack-kinds');
    assert.equal(prediction?.timestamp, at + 2);
    assert.equal(prediction?.source, 'battery_ai_predictor');

    // The same stream again: it resumes after the highest acknowledged sequence.
    const again = await device.connect(service.v2Port);
    assert.equal(again.resumeAfter, 3n);
    // Another stream of the same pack starts from nothing.
    const other = new V2Device('pack-kinds');
    assert.equal((await other.connect(service.v2Port)).resumeAfter, 0n);
    device.disconnect();
    other.disconnect();
    assert.ok((await v2Metric(service, 'v2Acks')) >= 1);
  });

  it('a reserved frame type, a non-finite number, a fractional cycle_count: acknowledged, counted, not stored', async (t) => {
    const service = await startV2Service(t);
    const device = new V2Device('pack-odd');
    await device.connect(service.v2Port);
    device.push({ type: 9, timestamp: now(), payload: Buffer.alloc(24) });
    device.push({ type: 1, timestamp: now(), fields: { pack_voltage: NaN, pack_current: 0, cell_temp: 0 } });
    device.push({
      type: 2,
      timestamp: now(),
      fields: { pack_voltage: 1, pack_current: 1, cell_temp: 1, capacity_remaining: 1, cycle_count: 1.5, age_months: 1, health_score: 1 },
    });
    device.push(reading(4));
    await device.allAcked();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-odd')), [4]);
    assert.equal((await stored(service, 'battery-performance', 'pack-odd')).length, 0);
    assert.equal(await rejected(service, 'unknown_kind'), 1);
    assert.equal(await rejected(service, 'non_finite'), 1);
    assert.equal(await rejected(service, 'invalid_record'), 1);
    device.disconnect();
  });

  it('exactly once after a lost ack: the device closes before reading it and sends the same frames again', async (t) => {
    const service = await startV2Service(t);
    const streamId = randomStreamId();
    const first = await rawConnection(service.v2Port);
    first.socket.write(Buffer.concat([encodeHandshake('pack-lost', streamId), frame(1), frame(2), frame(3)]));
    await first.bytes(ANSWER_BYTES, 'the answer');
    await eventually(async () => (await stored(service, 'battery-data', 'pack-lost')).length === 3, 'three records stored');
    first.socket.destroy();

    // A device that lost the ack (and, here, pays no heed to resume_after) sends 1-3 again, then 4.
    const second = await rawConnection(service.v2Port);
    second.socket.write(Buffer.concat([encodeHandshake('pack-lost', streamId), frame(1), frame(2), frame(3), frame(4)]));
    const received = await second.bytes(ANSWER_BYTES + ACK_BYTES, 'the answer and an ack');
    await eventually(() => second.received().subarray(-ACK_BYTES).equals(encodeAck(4n)), 'ack 4');
    second.socket.destroy();
    assert.equal(parseAnswer(received)?.resumeAfter, 3n);
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-lost')), [1, 2, 3, 4]);
    assert.equal(await v2Metric(service, 'v2Duplicates'), 3);
  });

  it('exactly once after a cut mid-frame: the partial frame is dropped, counted, and sent again after resume_after', async (t) => {
    const service = await startV2Service(t);
    const second = frame(2);
    const first = await rawConnection(service.v2Port);
    // Half of frame 2 reaches the service before the link drops.
    first.socket.write(Buffer.concat([encodeHandshake('pack-cut', 11n), frame(1), second.subarray(0, 10)]));
    const received = await first.bytes(ANSWER_BYTES + ACK_BYTES, 'ack 1');
    assert.ok(received.subarray(ANSWER_BYTES).equals(encodeAck(1n)));
    first.socket.destroy();
    await eventually(async () => (await rejected(service, 'partial_frame')) === 1, 'the partial frame counted');

    const again = await rawConnection(service.v2Port);
    again.socket.write(encodeHandshake('pack-cut', 11n));
    assert.equal(parseAnswer(await again.bytes(ANSWER_BYTES, 'the answer'))?.resumeAfter, 1n);
    again.socket.write(Buffer.concat([second, frame(3)]));
    await eventually(() => again.received().subarray(-ACK_BYTES).equals(encodeAck(3n)), 'ack 3');
    again.socket.destroy();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-cut')), [1, 2, 3]);
  });

  it('a bad CRC closes the connection: the frames before it are acknowledged and kept, nothing of it or after it is stored', async (t) => {
    const service = await startV2Service(t);
    const bad = frame(3);
    bad[14]! ^= 0x10;
    const received = await exchange(service.v2Port, Buffer.concat([encodeHandshake('pack-crc', 5n), frame(1), frame(2), bad, frame(4)]), 'a bad CRC');
    assert.equal(parseAnswer(received)?.status, 0);
    assert.ok(received.subarray(ANSWER_BYTES).equals(encodeAck(2n)), received.subarray(ANSWER_BYTES).toString('hex'));
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-crc')), [1, 2]);
    assert.equal(await rejected(service, 'bad_crc'), 1);
    // A sequence that does not grow closes it too (the device flags its skip of 1-4: no gap).
    const backwards = await exchange(service.v2Port, Buffer.concat([encodeHandshake('pack-crc', 6n), skipping(5), skipping(5)]), 'a repeated sequence');
    assert.ok(backwards.subarray(ANSWER_BYTES).equals(encodeAck(5n)));
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-crc')), [1, 2, 5]);
  });

  it('a sequence gap without the skipped flag (a frame lost on the way) closes the connection: the frames before it acknowledged, nothing from it on stored; the device sends again from resume_after + 1', async (t) => {
    const service = await startV2Service(t);
    // Frame 3 went missing between the device and the service.
    const received = await exchange(service.v2Port, Buffer.concat([encodeHandshake('pack-gap', 21n), frame(1), frame(2), frame(4), frame(5)]), 'a gap');
    assert.equal(parseAnswer(received)?.status, 0);
    assert.ok(received.subarray(ANSWER_BYTES).equals(encodeAck(2n)), received.subarray(ANSWER_BYTES).toString('hex'));
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-gap')), [1, 2]);
    assert.equal(await rejected(service, 'invalid_record'), 1);

    const again = await rawConnection(service.v2Port);
    again.socket.write(encodeHandshake('pack-gap', 21n));
    assert.equal(parseAnswer(await again.bytes(ANSWER_BYTES, 'the answer'))?.resumeAfter, 2n);
    again.socket.write(Buffer.concat([frame(3), frame(4), frame(5)]));
    await eventually(() => again.received().subarray(-ACK_BYTES).equals(encodeAck(5n)), 'ack 5');
    again.socket.destroy();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-gap')), [1, 2, 3, 4, 5]);
  });

  it('the same gap flagged as the device\'s own skip is stored and acknowledged, on the first frame after resume_after too', async (t) => {
    const service = await startV2Service(t);
    // Unflagged, 6 after 2 is a gap: refused.
    const refused = await exchange(service.v2Port, Buffer.concat([encodeHandshake('pack-skip', 22n), frame(1), frame(2), frame(6)]), 'a gap');
    assert.ok(refused.subarray(ANSWER_BYTES).equals(encodeAck(2n)), refused.subarray(ANSWER_BYTES).toString('hex'));
    // The device's full queue dropped 3-5, then 8: flagged, they are taken, 6 as the first frame after resume_after 2.
    const first = await rawConnection(service.v2Port);
    first.socket.write(encodeHandshake('pack-skip', 22n));
    assert.equal(parseAnswer(await first.bytes(ANSWER_BYTES, 'the answer'))?.resumeAfter, 2n);
    first.socket.write(Buffer.concat([skipping(6), frame(7), skipping(9)]));
    await eventually(() => first.received().subarray(-ACK_BYTES).equals(encodeAck(9n)), 'ack 9');
    // Within a connection too: 10-11 dropped after 9 was sent.
    first.socket.write(Buffer.concat([skipping(12), frame(13)]));
    await eventually(() => first.received().subarray(-ACK_BYTES).equals(encodeAck(13n)), 'ack 13');
    first.socket.destroy();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-skip')), [1, 2, 6, 7, 9, 12, 13]);
    assert.equal(await rejected(service, 'invalid_record'), 1);
  });

  it('the first frame of a connection past resume_after + 1 without the flag is refused: nothing stored, the connection closed', async (t) => {
    const service = await startV2Service(t);
    const device = new V2Device('pack-resume-gap');
    await device.connect(service.v2Port);
    device.push(reading(1));
    device.push(reading(2));
    await device.allAcked();
    device.disconnect();
    const again = await rawConnection(service.v2Port);
    again.socket.write(encodeHandshake('pack-resume-gap', device.streamId));
    assert.equal(parseAnswer(await again.bytes(ANSWER_BYTES, 'the answer'))?.resumeAfter, 2n);
    again.socket.write(frame(4));
    await within(closed(again.socket), 'the connection closed');
    assert.equal(again.received().length, ANSWER_BYTES, 'no ack');
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-resume-gap')), [1, 2]);
    assert.equal(await rejected(service, 'invalid_record'), 1);
  });

  it('collector_v2_duplicates_total counts the frames whose key the store held, whatever the stream position says', async (t) => {
    const service = await startV2Service(t);
    const streamId = randomStreamId();
    // Sequence 1 stored before (say, just before a crash that kept the position from being saved).
    const earlier = new RecordBatch('battery-data');
    earlier.append({ ...reading(1).fields, timestamp: now(), battery_id: 'pack-dup' }, now(), recordKey('pack-dup', streamId, 1n));
    await service.app.ingest.submit(earlier);
    const device = new V2Device('pack-dup', streamId);
    assert.equal((await device.connect(service.v2Port)).resumeAfter, 0n);
    device.push(reading(1));
    device.push(reading(2));
    await device.allAcked();
    device.disconnect();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-dup')), [1, 2]);
    assert.equal(await v2Metric(service, 'v2Duplicates'), 1);
  });

  it('clock skew: a device time off by more than MAX_CLOCK_SKEW_SECONDS is counted; stored as it is when plausible, else at the arrival time', async (t) => {
    const service = await startV2Service(t, { maxClockSkewSeconds: 3600 });
    const device = new V2Device('pack-clock');
    await device.connect(service.v2Port);
    const before = now();
    const old = before - 3 * 86_400;
    device.push(reading(1, old)); // plausible, skewed
    device.push(reading(2, 631_152_000)); // 1990: not plausible
    device.push(reading(3, before + 7200)); // two hours ahead of a one-hour bound
    device.push(reading(4, before)); // right
    await device.allAcked();
    device.disconnect();
    const records = await stored(service, 'battery-data', 'pack-clock');
    const byVoltage = new Map(records.map((r) => [Number(r.pack_voltage) - 300, r]));
    assert.equal(byVoltage.get(1)?.timestamp, old);
    assert.equal(byVoltage.get(1)?.device_time, old);
    assert.equal(byVoltage.get(2)?.device_time, 631_152_000);
    assert.ok(Number(byVoltage.get(2)?.timestamp) >= before, 'the arrival time');
    assert.equal(byVoltage.get(3)?.device_time, before + 7200);
    assert.ok(Number(byVoltage.get(3)?.timestamp) < before + 7200, 'the arrival time');
    assert.equal(byVoltage.get(4)?.timestamp, before);
    assert.equal(await v2Metric(service, 'v2ClockSkewed'), 3);
  });

  it("a stream's new handshake closes its older connection; the new one resumes after what the older one had acknowledged", async (t) => {
    const service = await startV2Service(t);
    const device = new V2Device('pack-twice');
    await device.connect(service.v2Port);
    device.push(reading(1));
    await device.allAcked();
    const older = device.socket!;
    // The same stream from a second socket (a device that rebooted while its old connection lingers).
    const newer = await rawConnection(service.v2Port);
    newer.socket.write(encodeHandshake('pack-twice', device.streamId));
    const answer = parseAnswer(await newer.bytes(ANSWER_BYTES, 'the answer'));
    assert.equal(answer?.resumeAfter, 1n);
    await within(closed(older), 'the older connection closed');
    newer.socket.write(frame(2));
    await newer.bytes(ANSWER_BYTES + ACK_BYTES, 'ack 2');
    newer.socket.destroy();
    assert.deepEqual(voltages(await stored(service, 'battery-data', 'pack-twice')), [1, 2]);
  });

  it('the collector limits apply: a handshake not complete within COLLECTOR_FIRST_BYTE_TIMEOUT, a peer over the per-address cap, a peer outside COLLECTOR_ALLOW', async (t) => {
    const service = await startV2Service(t, { collectorFirstByteTimeoutSeconds: 1, collectorMaxConnectionsPerAddress: 1 });
    const slow = await rawConnection(service.v2Port);
    // Three bytes of the magic, then nothing: closed without an answer.
    slow.socket.write(Buffer.from('BMV'));
    await within(closed(slow.socket), 'the unfinished handshake closed');
    assert.equal(slow.received().length, 0);
    await eventually(async () => (await metricValue(service.app.metrics.connectionsClosed, { listener: 'v2', reason: 'first_byte_timeout' })) === 1, 'counted');

    const device = new V2Device('pack-limits');
    await device.connect(service.v2Port);
    const second = await rawConnection(service.v2Port);
    await within(closed(second.socket), 'the second connection from one address refused');
    await eventually(async () => (await metricValue(service.app.metrics.connectionsRefused, { listener: 'v2', reason: 'per_address' })) === 1, 'counted');
    device.disconnect();

    const fenced = await startV2Service(t, { collectorAllow: loadConfig({ COLLECTOR_ALLOW: '10.0.0.0/8' }).collectorAllow });
    const outsider = await rawConnection(fenced.v2Port);
    outsider.socket.write(encodeHandshake('pack-limits', 1n));
    await within(closed(outsider.socket), 'a peer outside COLLECTOR_ALLOW refused');
    assert.equal(outsider.received().length, 0);
    await eventually(async () => (await metricValue(fenced.app.metrics.connectionsRefused, { listener: 'v2', reason: 'not_allowed' })) === 1, 'counted');
  });
});
