/**
 * Edge protocol v2 end to end with real processes and sockets (issue 12): the C++ example program
 * (`send_readings --protocol v2`) against the service as a child process on SQLite, through kill -9
 * of either side, connections cut mid-frame, corrupted and dropped bytes, and the service down for
 * a while, and a proxy that removes one whole frame from the stream. In each case every reading the
 * device accepted is stored exactly once, with its device timestamp, and nothing else is.
 *
 * How that is read back, through the HTTP API: send_readings stamps each frame with its clock as it
 * accepts it, in sequence order, so the device times order the stored records of all three kinds as
 * their sequence numbers do. Sorted by time they must be distinct and follow the program's pattern
 * (each reading; a performance record and a prediction after every EVERY-th), as many as the device
 * accepted: a record stored twice, one missing or one that the device did not send breaks it. Where
 * the device talks through the proxy, every frame it put on the wire is also compared with its
 * stored record, value for value.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import crc32c from 'crc-32/crc32c.js';
import { KIND_NAMES, KINDS, type KindName } from '../../src/records/kinds.js';
import { eventually, random, within } from '../collector/helpers.js';
import { spawnService, type ChildService } from '../support/child-service.js';
import { freePort } from '../support/free-port.js';
import { TcpProxy, type Tamper } from '../support/tcp-proxy.js';
import { tempDir } from '../support/temp-dir.js';

const CPP = fileURLToPath(new URL('../../clients/cpp/', import.meta.url));
const SEND_READINGS = path.join(CPP, 'build/send_readings');
const BATTERY = 'cpp-v2';
/** send_readings sends a performance record and a prediction right after every EVERY-th reading. */
const EVERY = 10;
/** The frame types of docs/protocol.md. */
const TYPE_KINDS: Readonly<Record<number, KindName>> = { 1: 'battery-data', 2: 'battery-performance', 3: 'battery-prediction' };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const nowSeconds = () => Date.now() / 1000;
const crc = (bytes: Buffer, end: number) => crc32c.buf(bytes.subarray(0, end), 0) >>> 0;

const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

// --- the service -------------------------------------------------------------------------------

async function startService(v2Port: number, dataDir: string): Promise<ChildService> {
  const env = { DATA_DIR: dataDir, COLLECTOR_HOST: '127.0.0.1', COLLECTOR_BINARY_PORT: '0', COLLECTOR_JSON_PORT: '0', COLLECTOR_V2_PORT: String(v2Port) };
  const service = await within(spawnService(['run'], env), 'the service listening', 60_000);
  children.push(service.child);
  return service;
}

async function stopService(service: ChildService, signal: 'SIGKILL' | 'SIGTERM'): Promise<void> {
  service.child.kill(signal);
  await within(service.exited, `the service exiting on ${signal}`, 30_000);
}

/** Waits until the service holds `count` of the device's records; on giving up, says what the service logged last. */
async function storedAtLeast(service: ChildService, count: number, what: string): Promise<void> {
  try {
    await eventually(async () => (await storedCount(service.url)) >= count, what, 60_000);
  } catch (error) {
    throw new Error(`${(error as Error).message}; the service's last log lines:\n${service.lines.slice(-20).join('\n')}`);
  }
}

async function storedCount(url: string): Promise<number> {
  const { batteries } = (await (await fetch(`${url}/api/batteries`)).json()) as { batteries: { battery_id: string; counts: Record<string, number> }[] };
  const counts = batteries.find((battery) => battery.battery_id === BATTERY)?.counts ?? {};
  return Object.values(counts).reduce((sum, count) => sum + count, 0);
}

interface Stored {
  kind: KindName;
  record: Record<string, number>;
}

/** Every record of the device, of every kind, through the export API. */
async function storedRecords(url: string): Promise<Stored[]> {
  const stored: Stored[] = [];
  for (const kind of KIND_NAMES) {
    const response = await fetch(`${url}/api/${kind}/export?hours=1&format=ndjson&battery_id=${BATTERY}`);
    assert.equal(response.status, 200);
    for (const line of (await response.text()).split('\n')) if (line !== '') stored.push({ kind, record: JSON.parse(line) as Record<string, number> });
  }
  return stored;
}

/** collector_rejected_total of the v2 listener for `reason`, from /metrics. */
async function rejected(url: string, reason: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('collector_rejected_total{') && l.includes('listener="v2"') && l.includes(`reason="${reason}"`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

// --- the device --------------------------------------------------------------------------------

interface Summary {
  accepted: number;
  acknowledged: number;
  dropped: number;
  lost: number;
  recovered: number;
  pending: number;
  stream: string;
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Its last line (none after a kill). */
  summary: Summary | undefined;
}

interface Device {
  child: ChildProcess;
  finished: Promise<Finished>;
}

const SUMMARY = /v2 accepted (\d+), acknowledged (\d+), dropped (\d+), lost (\d+), recovered (\d+), pending (\d+), stream ([0-9a-f]{16})/;

function startDevice(port: number, queue: string, options: string[]): Device {
  const args = ['--protocol', 'v2', '--host', '127.0.0.1', '--port', String(port), '--battery-id', BATTERY, '--queue', queue, '--every', String(EVERY), ...options];
  const child = spawn(SEND_READINGS, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // A safety net: every run here ends well within it.
  const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
  const finished = new Promise<Finished>((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const match = SUMMARY.exec(stdout);
      const summary = match === null ? undefined : {
        accepted: Number(match[1]), acknowledged: Number(match[2]), dropped: Number(match[3]), lost: Number(match[4]),
        recovered: Number(match[5]), pending: Number(match[6]), stream: match[7]!,
      };
      resolve({ code, signal, stderr, summary });
    }),
  );
  return { child, finished };
}

/** Waits for a run to end on its own, and answers its summary: everything it accepted acknowledged. */
async function delivered(device: Device): Promise<Summary> {
  const { code, signal, stderr, summary } = await within(device.finished, 'send_readings to finish', 150_000);
  assert.equal(code, 0, `send_readings exited ${code ?? signal}: ${stderr}`);
  assert.ok(summary, 'no summary line');
  assert.deepEqual({ dropped: summary.dropped, lost: summary.lost, pending: summary.pending }, { dropped: 0, lost: 0, pending: 0 });
  return summary;
}

/** Frames a run of `readings` readings accepts: each reading, and two records with every EVERY-th. */
const framesOf = (readings: number) => readings + 2 * Math.ceil(readings / EVERY);

/** The kind of a run's frame at `position` (from 0), in the order send_readings accepts them. */
function kindAt(position: number): KindName {
  const inBlock = position % (EVERY + 2);
  return inBlock === 1 ? 'battery-performance' : inBlock === 2 ? 'battery-prediction' : 'battery-data';
}

/**
 * What the device's queue file holds (clients/cpp/README.md, "The queue file"): its stream, and the
 * highest sequence in it: a slot counts when its frame's CRC-32C holds and its sequence maps to that
 * slot. Accepting a reading is writing its slot, so after a kill -9 `newest` is the last sequence the
 * program accepted.
 */
function readQueue(file: string): { stream: string; newest: number } {
  const bytes = readFileSync(file);
  const header = [0, 512].map((at) => bytes.subarray(at, at + 64)).find((copy) => copy.toString('latin1', 0, 4) === 'BMVQ' && copy.readUInt32LE(60) === crc(copy, 60));
  assert.ok(header, `no readable header in ${file}`);
  const slotBytes = header.readUInt32LE(8);
  const slotCount = header.readUInt32LE(12);
  let newest = 0n;
  for (let slot = 0; slot < slotCount; slot++) {
    const frame = bytes.subarray(1024 + slot * slotBytes, 1024 + (slot + 1) * slotBytes);
    const length = frame.readUInt16LE(0);
    if (length < 24 || length > slotBytes || frame.readUInt32LE(length - 4) !== crc(frame, length - 4)) continue;
    const sequence = frame.readBigUInt64LE(4);
    if (sequence % BigInt(slotCount) === BigInt(slot) && sequence > newest) newest = sequence;
  }
  return { stream: header.readBigUInt64LE(16).toString(16).padStart(16, '0'), newest: Number(newest) };
}

// --- what went over the wire -------------------------------------------------------------------

/** Where each frame of a device's connection starts (after the 16 + L + 4 handshake bytes) and its length; the last may be incomplete. */
function frameSpans(sent: Buffer): { at: number; length: number }[] {
  const spans: { at: number; length: number }[] = [];
  if (sent.length < 6) return spans;
  for (let at = 16 + sent[5]! + 4; at + 2 <= sent.length; ) {
    const length = sent.readUInt16LE(at);
    // Not a frame a device would send (the service refuses it): nothing after it can be found.
    if (length < 24) break;
    spans.push({ at, length });
    at += length;
  }
  return spans;
}

interface WireFrame {
  kind: KindName;
  timestamp: number;
  values: Record<string, number>;
  bytes: Buffer;
}

/**
 * The frames the device sent through the proxy, by sequence, decoded here from docs/protocol.md
 * (not by the service's decoder, which they check). A frame sent again must be the same bytes.
 */
function framesSent(proxy: TcpProxy): Map<bigint, WireFrame> {
  const frames = new Map<bigint, WireFrame>();
  for (const sent of proxy.fromClient) {
    for (const { at, length } of frameSpans(sent)) {
      if (at + length > sent.length) break;
      const bytes = sent.subarray(at, at + length);
      const sequence = bytes.readBigUInt64LE(4);
      const earlier = frames.get(sequence);
      if (earlier !== undefined) {
        assert.ok(earlier.bytes.equals(bytes), `sequence ${sequence} sent again with other bytes`);
        continue;
      }
      const kind = TYPE_KINDS[bytes[2]!]!;
      const values = Object.fromEntries(Object.keys(KINDS[kind].fields).map((name, i) => [name, bytes.readDoubleLE(20 + 8 * i)]));
      frames.set(sequence, { kind, timestamp: bytes.readDoubleLE(12), values, bytes });
    }
  }
  return frames;
}

/**
 * Asserts that the device's records are exactly `total` frames of one stream, each once, in the
 * program's pattern, with its device time and the values the program makes (see the file's
 * comment); and that each frame in `sent` is stored as sent. Answers the records in sequence order.
 */
async function assertStoredOnce(url: string, { total, since, sent }: { total: number; since: number; sent?: Map<bigint, WireFrame> }): Promise<Stored[]> {
  const stored = (await storedRecords(url)).sort((a, b) => a.record.timestamp! - b.record.timestamp!);
  assert.equal(stored.length, total, `stored ${stored.length} records of the ${total} accepted`);
  const until = nowSeconds();
  stored.forEach(({ kind, record }, i) => {
    const where = `record ${i + 1} (${kind} at ${record.timestamp})`;
    assert.equal(kind, kindAt(i), `${where}: a record missing, stored twice or not sent before it`);
    if (i > 0) assert.ok(record.timestamp! > stored[i - 1]!.record.timestamp!, `${where}: the same device time twice`);
    assert.ok(record.timestamp! >= since && record.timestamp! <= until, `${where}: not a device time of this run`);
    if (kind === 'battery-data') {
      assert.equal(record.device_time, record.timestamp, `${where}: device_time`);
      // The simulator's readings are float32 values, in a discharging pack's range.
      for (const field of ['pack_voltage', 'pack_current', 'cell_temp']) assert.equal(Math.fround(record[field]!), record[field], `${where}: ${field} not a float32`);
      assert.ok(record.pack_voltage! > 300 && record.pack_voltage! < 420 && record.pack_current! > -100 && record.pack_current! < -20, `${where}: implausible`);
    } else if (kind === 'battery-performance') {
      // Its pack voltage and current are those of the reading just before, unrounded.
      const reading = stored[i - 1]!.record;
      assert.equal(Math.fround(record.pack_voltage!), reading.pack_voltage, `${where}: pack_voltage`);
      assert.equal(Math.fround(record.pack_current!), reading.pack_current, `${where}: pack_current`);
      assert.deepEqual([record.cycle_count, record.age_months, record.health_score], [412, 18, 92.3], `${where}: the simulator's constants`);
    } else {
      assert.deepEqual([record.remaining_cycles, record.degradation_rate], [1200, 0.021], `${where}: the simulator's constants`);
    }
  });
  for (const [sequence, frame] of sent ?? []) {
    const at = Number(sequence) - 1;
    assert.ok(at < stored.length, `sequence ${sequence} was sent, ${stored.length} stored`);
    const { kind, record } = stored[at]!;
    assert.equal(kind, frame.kind, `sequence ${sequence}: kind`);
    assert.equal(record.timestamp, frame.timestamp, `sequence ${sequence}: device time`);
    for (const [name, value] of Object.entries(frame.values)) assert.equal(record[name], value, `sequence ${sequence}: ${name}`);
  }
  return stored;
}

// --- faults on the wire ------------------------------------------------------------------------

/** The offset of a byte in the nth frame of a connection, picked from the frame's length once it is known. */
function inFrame(sent: () => Buffer, nth: number, pick: (length: number) => number): () => number | undefined {
  let at: number | undefined;
  return () => {
    const span = at === undefined ? frameSpans(sent())[nth] : undefined;
    if (span !== undefined) at = span.at + pick(span.length);
    return at;
  };
}

/** Forwards the bytes before `target` and closes both sides. */
function cutAt(target: () => number | undefined, applied: () => void): Tamper {
  return (chunk, offset) => {
    const at = target();
    if (at === undefined || at >= offset + chunk.length) return { bytes: chunk };
    applied();
    return { bytes: chunk.subarray(0, Math.max(at - offset, 0)), cut: true };
  };
}

/** Flips one bit of the byte at `target`. */
function flipAt(target: () => number | undefined, bit: number, applied: () => void): Tamper {
  return (chunk, offset) => {
    const at = target();
    if (at === undefined || at < offset || at >= offset + chunk.length) return { bytes: chunk };
    const bytes = Buffer.from(chunk);
    bytes[at - offset]! ^= 1 << bit;
    applied();
    return { bytes };
  };
}

/** Drops `length` bytes from `target` on (a length not yet known: nothing). */
function dropAt(target: () => number | undefined, length: () => number | undefined, applied: () => void): Tamper {
  return (chunk, offset) => {
    const at = target();
    const dropped = length();
    if (at === undefined || dropped === undefined) return { bytes: chunk };
    const from = Math.max(at - offset, 0);
    const to = Math.min(at + dropped - offset, chunk.length);
    if (from >= to) return { bytes: chunk };
    if (at >= offset) applied();
    return { bytes: Buffer.concat([chunk.subarray(0, from), chunk.subarray(to)]) };
  };
}

// --- the tests ---------------------------------------------------------------------------------

describe('the C++ device on edge protocol v2 against the service (child processes, SQLite)', () => {
  before(async () => {
    await promisify(execFile)('make', ['-C', CPP, 'build/send_readings'], { timeout: 300_000 });
  });

  it('kill -9 of the service while the device sends: the device, still running, reconnects to the restarted service and resumes', { timeout: 240_000 }, async (t) => {
    const v2Port = await freePort();
    const dataDir = tempDir();
    let service = await startService(v2Port, dataDir);
    const since = nowSeconds();
    const readings = 300;
    const device = startDevice(v2Port, path.join(tempDir(), 'device.queue'), ['--count', String(readings), '--rate', '50', '--timeout', '60']);
    await storedAtLeast(service, 30, 'readings stored before the kill');
    await stopService(service, 'SIGKILL');
    const down = nowSeconds();
    await sleep(1000);
    const up = nowSeconds();
    service = await startService(v2Port, dataDir);

    const summary = await delivered(device);
    assert.equal(summary.accepted, framesOf(readings));
    const stored = await assertStoredOnce(service.url, { total: summary.accepted, since });
    // Accepted while nothing listened, stored later with the device's time.
    const buffered = stored.filter(({ record }) => record.timestamp! > down && record.timestamp! < up);
    t.diagnostic(`${buffered.length} of ${stored.length} records accepted during the outage`);
    assert.ok(buffered.length > 0, 'no reading accepted during the outage');
    assert.ok(buffered.every(({ record }) => record.received_at! > up));
    await stopService(service, 'SIGTERM');
  });

  it('kill -9 of the device program: started again with --resume on its queue file, it sends what was not acknowledged', { timeout: 240_000 }, async (t) => {
    const v2Port = await freePort();
    const service = await startService(v2Port, tempDir());
    // The proxy swallows what the device sends while `holding`: sent, never acknowledged.
    let holding = false;
    const proxy = await TcpProxy.start(v2Port, () => ({ toTarget: (chunk) => ({ bytes: holding ? Buffer.alloc(0) : chunk }) }));
    t.after(() => proxy.close());
    const queue = path.join(tempDir(), 'device.queue');
    const since = nowSeconds();
    // With fsync batch, the readings accepted since the last fsync are not sent yet either.
    const device = startDevice(proxy.port, queue, ['--count', '100000', '--rate', '50', '--fsync', 'batch']);
    await storedAtLeast(service, 30, 'readings stored before the hold');
    holding = true;
    const sentBefore = proxy.fromClient.reduce((sum, sent) => sum + sent.length, 0);
    await eventually(() => proxy.fromClient.reduce((sum, sent) => sum + sent.length, 0) > sentBefore + 20 * 48, 'frames sent and held', 30_000);
    device.child.kill('SIGKILL');
    assert.equal((await within(device.finished, 'the killed device')).signal, 'SIGKILL');
    const { stream, newest: accepted } = readQueue(queue);
    const storedBefore = await storedCount(service.url);
    t.diagnostic(`accepted ${accepted}, stored before the resume ${storedBefore}`);
    assert.ok(storedBefore < accepted, 'everything was stored before the kill: nothing left to resume');

    holding = false;
    const resumed = await delivered(startDevice(proxy.port, queue, ['--resume', '--count', '0']));
    t.diagnostic(`resumed: ${JSON.stringify(resumed)}`);
    assert.ok(resumed.recovered > 0, `recovered ${resumed.recovered}`);
    assert.equal(resumed.accepted, 0);
    assert.equal(resumed.stream, stream, 'the same stream continues');
    await assertStoredOnce(service.url, { total: accepted, since, sent: framesSent(proxy) });
    await stopService(service, 'SIGTERM');
  });

  it('connections cut mid-frame, several times: what was cut off is sent again and stored once', { timeout: 240_000 }, async (t) => {
    const seed = Date.now() >>> 0;
    t.diagnostic(`seed ${seed}`);
    const rand = random(seed);
    const v2Port = await freePort();
    const service = await startService(v2Port, tempDir());
    const cutConnections = 6;
    let cuts = 0;
    // The first connections are cut after a random number of bytes, inside a random one of their first frames.
    const proxy: TcpProxy = await TcpProxy.start(v2Port, (connection) => {
      if (connection >= cutConnections) return {};
      const target = inFrame(() => proxy.fromClient[connection]!, Math.floor(rand() * 10), (length) => 1 + Math.floor(rand() * (length - 1)));
      return { toTarget: cutAt(target, () => cuts++) };
    });
    t.after(() => proxy.close());
    const since = nowSeconds();
    // Long enough for the faulty connections and their growing reconnection delays, with frames still coming after the last fault.
    const readings = 800;
    const summary = await delivered(startDevice(proxy.port, path.join(tempDir(), 'device.queue'), ['--count', String(readings), '--rate', '100', '--ack-timeout', '3000']));

    assert.equal(summary.accepted, framesOf(readings));
    t.diagnostic(`${cuts} cuts in ${proxy.connections} connections`);
    assert.ok(cuts >= 3, `${cuts} connections cut (seed ${seed})`);
    assert.ok(proxy.connections > cuts);
    // Each cut left the service part of a frame: counted, not stored.
    assert.equal(await rejected(service.url, 'partial_frame'), cuts, `seed ${seed}`);
    await assertStoredOnce(service.url, { total: summary.accepted, since, sent: framesSent(proxy) });
    await stopService(service, 'SIGTERM');
  });

  it('a proxy that flips bits in frames and in acks, or drops a chunk: counted as bad_crc, the device resends, nothing corrupt is stored', { timeout: 240_000 }, async (t) => {
    const seed = Date.now() >>> 0;
    t.diagnostic(`seed ${seed}`);
    const rand = random(seed);
    const v2Port = await freePort();
    const service = await startService(v2Port, tempDir());
    const faults = ['flip', 'drop', 'flip ack', 'flip', 'drop', 'flip ack'] as const;
    const applied: string[] = [];
    const proxy: TcpProxy = await TcpProxy.start(v2Port, (connection) => {
      const fault = faults[connection];
      if (fault === undefined) return {};
      const done = () => applied.push(fault);
      const bit = Math.floor(rand() * 8);
      if (fault === 'flip ack') {
        // A byte of the first ack, after the 24-byte answer.
        const ackByte = 24 + Math.floor(rand() * 16);
        return { toClient: flipAt(() => ackByte, bit, done) };
      }
      // Past a frame's length field: a length changed or cut short would be another fault (a partial frame, or one out of range).
      const target = inFrame(() => proxy.fromClient[connection]!, Math.floor(rand() * 10), (length) => 2 + Math.floor(rand() * (length - 2)));
      const dropped = 1 + Math.floor(rand() * 100);
      return { toTarget: fault === 'flip' ? flipAt(target, bit, done) : dropAt(target, () => dropped, done) };
    });
    t.after(() => proxy.close());
    const since = nowSeconds();
    // Long enough for the faulty connections and their growing reconnection delays, with frames still coming after the last fault.
    const readings = 800;
    const summary = await delivered(startDevice(proxy.port, path.join(tempDir(), 'device.queue'), ['--count', String(readings), '--rate', '100', '--ack-timeout', '3000']));

    assert.equal(summary.accepted, framesOf(readings));
    const corruptFrames = applied.filter((fault) => fault !== 'flip ack').length;
    t.diagnostic(`faults applied: ${applied.join(', ')} in ${proxy.connections} connections`);
    assert.ok(corruptFrames >= 2 && applied.includes('flip ack'), `faults applied: ${applied.join(', ')} (seed ${seed})`);
    // One per corrupted connection: the service closed it at the first bad frame.
    assert.equal(await rejected(service.url, 'bad_crc'), corruptFrames, `faults applied: ${applied.join(', ')} (seed ${seed})`);
    await assertStoredOnce(service.url, { total: summary.accepted, since, sent: framesSent(proxy) });
    await stopService(service, 'SIGTERM');
  });

  it('a proxy that removes one whole frame: the service refuses the gap it leaves, the device sends again from resume_after, every reading stored once', { timeout: 240_000 }, async (t) => {
    const v2Port = await freePort();
    const service = await startService(v2Port, tempDir());
    let removed = 0;
    // The 5th frame of the first connection, length field to CRC: what follows lines up as a good frame.
    const proxy: TcpProxy = await TcpProxy.start(v2Port, (connection) => {
      if (connection > 0) return {};
      const span = () => frameSpans(proxy.fromClient[0]!)[4];
      return { toTarget: dropAt(() => span()?.at, () => span()?.length, () => removed++) };
    });
    t.after(() => proxy.close());
    const since = nowSeconds();
    const readings = 200;
    const summary = await delivered(startDevice(proxy.port, path.join(tempDir(), 'device.queue'), ['--count', String(readings), '--rate', '100']));

    assert.equal(summary.accepted, framesOf(readings));
    assert.equal(removed, 1, 'the frame was not removed');
    await assertStoredOnce(service.url, { total: summary.accepted, since, sent: framesSent(proxy) });
    t.diagnostic(`${proxy.connections} connections`);
    // The frame after the gap closed the first connection (counted once); the device sent the removed one again on the next.
    assert.equal(await rejected(service.url, 'invalid_record'), 1);
    assert.ok(proxy.connections >= 2, 'the device did not reconnect');
    await stopService(service, 'SIGTERM');
  });

  it('the service stopped for a while: the device keeps accepting readings into its queue file, and all arrive once the service is back', { timeout: 240_000 }, async (t) => {
    const v2Port = await freePort();
    const dataDir = tempDir();
    let service = await startService(v2Port, dataDir);
    const queue = path.join(tempDir(), 'device.queue');
    const since = nowSeconds();
    const readings = 400;
    const device = startDevice(v2Port, queue, ['--count', String(readings), '--rate', '50', '--fsync', 'never', '--timeout', '60']);
    await storedAtLeast(service, 30, 'readings stored before the stop');
    await stopService(service, 'SIGTERM');
    const down = nowSeconds();
    const queuedAtStop = readQueue(queue).newest;
    await sleep(3000);
    assert.ok(readQueue(queue).newest > queuedAtStop, 'the device accepted nothing while the service was down');
    const up = nowSeconds();
    service = await startService(v2Port, dataDir);

    const summary = await delivered(device);
    assert.equal(summary.accepted, framesOf(readings));
    const stored = await assertStoredOnce(service.url, { total: summary.accepted, since });
    const buffered = stored.filter(({ record }) => record.timestamp! > down && record.timestamp! < up);
    t.diagnostic(`${buffered.length} of ${stored.length} records accepted during the outage`);
    assert.ok(buffered.length > 0, 'no reading accepted during the outage');
    assert.ok(buffered.every(({ record }) => record.received_at! > up));
    await stopService(service, 'SIGTERM');
  });
});
