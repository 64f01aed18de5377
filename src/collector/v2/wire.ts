/**
 * Edge protocol v2 on the wire (docs/protocol.md draws it): the handshake, its answer, frames and
 * acknowledgements, as functions over bytes kept apart from sockets, so they are tested against the
 * shared vectors (test/vectors/v2-frames.json) and fuzzed. All integers little-endian; every message
 * ends with a CRC-32C of the bytes before it.
 *
 * Nothing here throws on what a peer sends: every byte sequence is either a message, "not yet"
 * (more bytes needed) or a refusal with its reason. A frame becomes a record only once its length,
 * its CRC and its payload's size for its type have all been checked.
 */
import crc32c from 'crc-32/crc32c.js';
import { MAX_TIMESTAMP, MAX_MEASUREMENT, MIN_TIMESTAMP } from '../../records/schemas.js';
import { KINDS, MAX_ARRAY_ITEMS, type KindName, type RecordInput } from '../../records/kinds.js';
import { sequenceText, streamHex } from './stream-keys.js';

/** "BMV2" */
export const MAGIC = Buffer.from('BMV2', 'latin1');
export const VERSION = 2;
/** Handshake bytes before the battery id; the CRC follows the id. */
export const HANDSHAKE_HEADER_BYTES = 16;
export const MAX_HANDSHAKE_BYTES = HANDSHAKE_HEADER_BYTES + 64 + 4;
export const ANSWER_BYTES = 24;
export const ACK_BYTES = 16;
export const ACK_TYPE = 0x81;
/** Header (length, type, flags, sequence, timestamp) before the payload. */
export const FRAME_HEADER_BYTES = 20;
export const MIN_FRAME_BYTES = FRAME_HEADER_BYTES + 4;
/**
 * Frame flags bit 0: the device does not send the sequences between the previous frame it sent on
 * this connection (for the first frame of a connection: the handshake's resume_after) and this one,
 * as it no longer holds them (dropped by its full queue, or acknowledged before a resume_after that
 * lags). Without it a frame must follow directly: a missing number is a frame lost on the way, not a
 * skip. The other bits are reserved and ignored.
 */
export const FLAG_SKIPPED = 0x01;
/** The largest frame: a battery-data frame with 1024 cell voltages and 1024 cell temperatures. */
export const MAX_FRAME_BYTES = FRAME_HEADER_BYTES + 28 + 8 * 2 * MAX_ARRAY_ITEMS + 4;
const BATTERY_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export const HandshakeStatus = { ok: 0, unsupportedVersion: 1, badBatteryId: 2, malformed: 3, busy: 4 } as const;
export type HandshakeStatus = (typeof HandshakeStatus)[keyof typeof HandshakeStatus];

/** Frame types and the kinds they carry; others are reserved. */
export const FRAME_KINDS: Readonly<Record<number, KindName>> = { 1: 'battery-data', 2: 'battery-performance', 3: 'battery-prediction' };
export const FRAME_TYPES: Readonly<Record<KindName, number>> = { 'battery-data': 1, 'battery-performance': 2, 'battery-prediction': 3 };

/** CRC-32C (Castagnoli) of `bytes[from, to)`, unsigned. */
export function crc32cOf(bytes: Uint8Array, from = 0, to = bytes.length): number {
  return crc32c.buf(bytes.subarray(from, to), 0) >>> 0;
}

/** True when the u32 LE at `at` is the CRC-32C of `bytes[0, at)`. */
function crcHolds(bytes: Buffer, at: number): boolean {
  return bytes.readUInt32LE(at) === crc32cOf(bytes, 0, at);
}

function sealed(bytes: Buffer): Buffer {
  bytes.writeUInt32LE(crc32cOf(bytes, 0, bytes.length - 4), bytes.length - 4);
  return bytes;
}

export { streamHex };

/** The idempotency key of a frame's record: a frame sent again gets the same one. */
export function recordKey(batteryId: string, streamId: bigint, sequence: bigint): string {
  return `v2:${batteryId}:${streamHex(streamId)}:${sequenceText(sequence)}`;
}

export interface Handshake {
  batteryId: string;
  streamId: bigint;
}

export type HandshakeParse =
  /** More bytes are needed. */
  | { done: false }
  | { done: true; ok: true; handshake: Handshake; bytes: number }
  | { done: true; ok: false; status: Exclude<HandshakeStatus, 0>; why: string };

/**
 * Reads the handshake at the start of `bytes`: answers as soon as the bytes decide it (a wrong magic
 * or version needs no more), "not yet" while they do not.
 */
export function parseHandshake(bytes: Buffer): HandshakeParse {
  const magic = Math.min(bytes.length, MAGIC.length);
  if (!bytes.subarray(0, magic).equals(MAGIC.subarray(0, magic))) return { done: true, ok: false, status: HandshakeStatus.malformed, why: 'not a v2 handshake (magic)' };
  if (bytes.length < 5) return { done: false };
  if (bytes[4] !== VERSION) return { done: true, ok: false, status: HandshakeStatus.unsupportedVersion, why: `version ${bytes[4]}` };
  if (bytes.length < 6) return { done: false };
  const idLength = bytes[5]!;
  if (idLength < 1 || idLength > 64) return { done: true, ok: false, status: HandshakeStatus.malformed, why: `battery id length ${idLength}` };
  const length = HANDSHAKE_HEADER_BYTES + idLength + 4;
  if (bytes.length < length) return { done: false };
  const message = bytes.subarray(0, length);
  if (!crcHolds(message, length - 4)) return { done: true, ok: false, status: HandshakeStatus.malformed, why: 'bad CRC' };
  const streamId = message.readBigUInt64LE(8);
  if (streamId === 0n) return { done: true, ok: false, status: HandshakeStatus.malformed, why: 'stream id 0' };
  const batteryId = message.toString('latin1', HANDSHAKE_HEADER_BYTES, HANDSHAKE_HEADER_BYTES + idLength);
  if (!BATTERY_ID.test(batteryId)) return { done: true, ok: false, status: HandshakeStatus.badBatteryId, why: 'battery id not ^[A-Za-z0-9._:-]{1,64}$' };
  return { done: true, ok: true, handshake: { batteryId, streamId }, bytes: length };
}

/** The device's handshake (tests, the test device, benchmarks). */
export function encodeHandshake(batteryId: string, streamId: bigint, version = VERSION): Buffer {
  const id = Buffer.from(batteryId, 'latin1');
  const bytes = Buffer.alloc(HANDSHAKE_HEADER_BYTES + id.length + 4);
  MAGIC.copy(bytes, 0);
  bytes[4] = version;
  bytes[5] = id.length;
  bytes.writeBigUInt64LE(streamId, 8);
  id.copy(bytes, HANDSHAKE_HEADER_BYTES);
  return sealed(bytes);
}

export interface Answer {
  status: HandshakeStatus;
  resumeAfter: bigint;
  maxFrameBytes: number;
}

export function encodeAnswer(status: HandshakeStatus, resumeAfter = 0n, maxFrameBytes = MAX_FRAME_BYTES): Buffer {
  const bytes = Buffer.alloc(ANSWER_BYTES);
  MAGIC.copy(bytes, 0);
  bytes[4] = VERSION;
  bytes[5] = status;
  bytes.writeBigUInt64LE(resumeAfter, 8);
  bytes.writeUInt32LE(maxFrameBytes, 16);
  return sealed(bytes);
}

/** The device's reading of an answer; undefined when it is not one (magic, version or CRC). */
export function parseAnswer(bytes: Buffer): Answer | undefined {
  if (bytes.length < ANSWER_BYTES || !bytes.subarray(0, 4).equals(MAGIC) || bytes[4] !== VERSION || !crcHolds(bytes, ANSWER_BYTES - 4)) return undefined;
  return { status: bytes[5]! as HandshakeStatus, resumeAfter: bytes.readBigUInt64LE(8), maxFrameBytes: bytes.readUInt32LE(16) };
}

export function encodeAck(sequence: bigint): Buffer {
  const bytes = Buffer.alloc(ACK_BYTES);
  bytes.writeUInt16LE(ACK_BYTES, 0);
  bytes[2] = ACK_TYPE;
  bytes.writeBigUInt64LE(sequence, 4);
  return sealed(bytes);
}

/** The device's reading of an ack at `offset`; undefined when it is not one. */
export function parseAck(bytes: Buffer, offset = 0): bigint | undefined {
  const ack = bytes.subarray(offset, offset + ACK_BYTES);
  if (ack.length < ACK_BYTES || ack.readUInt16LE(0) !== ACK_BYTES || ack[2] !== ACK_TYPE || !crcHolds(ack, ACK_BYTES - 4)) return undefined;
  return ack.readBigUInt64LE(4);
}

/** What a frame carries, as a device sends it. */
export interface FrameContent {
  /** A frame type: 1-3 for the kinds, others reserved. */
  type: number;
  sequence: bigint;
  /** The flags byte (FLAG_SKIPPED); 0 when absent. */
  flags?: number;
  /** Unix seconds from the device clock. */
  timestamp: number;
  /** The kind's measurements by name (the kinds table's order is the wire order). */
  fields?: Readonly<Record<string, number>>;
  cell_voltages?: readonly number[];
  cell_temps?: readonly number[];
  /** The raw payload instead (tests of reserved types and wrong sizes). */
  payload?: Buffer;
}

/** A frame of a device (the test device, tests, benchmarks). */
export function encodeFrame(content: FrameContent): Buffer {
  const payload = content.payload ?? encodePayload(content);
  const bytes = Buffer.alloc(FRAME_HEADER_BYTES + payload.length + 4);
  bytes.writeUInt16LE(bytes.length, 0);
  bytes[2] = content.type;
  bytes[3] = content.flags ?? 0;
  bytes.writeBigUInt64LE(content.sequence, 4);
  bytes.writeDoubleLE(content.timestamp, 12);
  payload.copy(bytes, FRAME_HEADER_BYTES);
  return sealed(bytes);
}

function encodePayload(content: FrameContent): Buffer {
  const kind = FRAME_KINDS[content.type];
  if (kind === undefined) return Buffer.alloc(0);
  const names = Object.keys(KINDS[kind].fields);
  const voltages = content.cell_voltages ?? [];
  const temps = content.cell_temps ?? [];
  const cells = kind === 'battery-data' && (voltages.length > 0 || temps.length > 0);
  const payload = Buffer.alloc(names.length * 8 + (cells ? 4 + 8 * (voltages.length + temps.length) : 0));
  names.forEach((name, i) => payload.writeDoubleLE(content.fields?.[name] ?? 0, i * 8));
  if (cells) {
    let at = names.length * 8;
    payload.writeUInt16LE(voltages.length, at);
    payload.writeUInt16LE(temps.length, at + 2);
    at += 4;
    for (const value of [...voltages, ...temps]) {
      payload.writeDoubleLE(value, at);
      at += 8;
    }
  }
  return payload;
}

/**
 * A frame checked for length and CRC, read: a record, or a frame refused for good (acknowledged:
 * sending it again would not help), or one that ends the connection (nothing of it is stored).
 * `skipped`: the frame carries FLAG_SKIPPED.
 */
export type DecodedFrame =
  | { ok: true; kind: KindName; sequence: bigint; skipped: boolean; timestamp: number; record: RecordInput }
  | { ok: false; fatal: false; reason: 'unknown_kind' | 'non_finite' | 'invalid_record'; sequence: bigint; skipped: boolean; why: string }
  | { ok: false; fatal: true; reason: 'bad_crc' | 'malformed'; why: string };

const NUMBERS = Object.fromEntries(
  Object.values(FRAME_KINDS).map((kind) => [kind, Object.entries(KINDS[kind].fields).map(([name, field]) => ({ name, integer: field.type === 'integer' }))]),
) as Record<KindName, { name: string; integer: boolean }[]>;

/**
 * Decodes the whole frame `frame` (its length field says frame.length; the caller cut it so). The
 * record has the device's timestamp as `timestamp` (and as device_time where the kind keeps one);
 * the caller decides whether that time is plausible.
 */
export function decodeFrame(frame: Buffer): DecodedFrame {
  const length = frame.length;
  if (length < MIN_FRAME_BYTES || length > MAX_FRAME_BYTES || frame.readUInt16LE(0) !== length) return { ok: false, fatal: true, reason: 'malformed', why: `length ${length}` };
  if (!crcHolds(frame, length - 4)) return { ok: false, fatal: true, reason: 'bad_crc', why: 'bad CRC' };
  const type = frame[2]!;
  const skipped = (frame[3]! & FLAG_SKIPPED) !== 0;
  const sequence = frame.readBigUInt64LE(4);
  const timestamp = frame.readDoubleLE(12);
  const kind = FRAME_KINDS[type];
  if (kind === undefined) return { ok: false, fatal: false, reason: 'unknown_kind', sequence, skipped, why: `frame type ${type}` };
  const payload = length - FRAME_HEADER_BYTES - 4;
  const numbers = NUMBERS[kind];
  const fixed = numbers.length * 8;
  let voltages = 0;
  let temps = 0;
  if (kind === 'battery-data' && payload !== fixed) {
    if (payload >= fixed + 4) {
      voltages = frame.readUInt16LE(FRAME_HEADER_BYTES + fixed);
      temps = frame.readUInt16LE(FRAME_HEADER_BYTES + fixed + 2);
    }
    if (payload !== fixed + 4 + 8 * (voltages + temps) || voltages > MAX_ARRAY_ITEMS || temps > MAX_ARRAY_ITEMS) {
      return { ok: false, fatal: true, reason: 'malformed', why: `${payload}-byte payload for ${kind} (${voltages} cell voltages, ${temps} cell temperatures)` };
    }
  } else if (payload !== fixed) {
    return { ok: false, fatal: true, reason: 'malformed', why: `${payload}-byte payload for ${kind}, not ${fixed}` };
  }
  if (!Number.isFinite(timestamp)) return { ok: false, fatal: false, reason: 'non_finite', sequence, skipped, why: 'timestamp' };
  const record: RecordInput = { timestamp };
  if (KINDS[kind].deviceTime) record.device_time = timestamp;
  let at = FRAME_HEADER_BYTES;
  for (const { name, integer } of numbers) {
    const value = frame.readDoubleLE(at);
    at += 8;
    if (!Number.isFinite(value)) return { ok: false, fatal: false, reason: 'non_finite', sequence, skipped, why: name };
    if (integer ? !Number.isSafeInteger(value) : Math.abs(value) > MAX_MEASUREMENT) {
      return { ok: false, fatal: false, reason: 'invalid_record', sequence, skipped, why: `${name} ${value}` };
    }
    record[name] = value;
  }
  if (payload > fixed) at += 4;
  for (const [name, count] of [['cell_voltages', voltages], ['cell_temps', temps]] as const) {
    if (count === 0) continue;
    const values = new Array<number>(count);
    for (let i = 0; i < count; i++, at += 8) {
      const value = frame.readDoubleLE(at);
      if (!Number.isFinite(value)) return { ok: false, fatal: false, reason: 'non_finite', sequence, skipped, why: `${name}[${i}]` };
      if (Math.abs(value) > MAX_MEASUREMENT) return { ok: false, fatal: false, reason: 'invalid_record', sequence, skipped, why: `${name}[${i}] ${value}` };
      values[i] = value;
    }
    record[name] = values;
  }
  return { ok: true, kind, sequence, skipped, timestamp, record };
}

/**
 * Where the stored timestamp of a frame comes from: the device's clock when it is plausible (from
 * 2000 on, at most MAX_CLOCK_SKEW_SECONDS ahead of ours), else the arrival time.
 */
export function plausibleTime(deviceSeconds: number, arrivalSeconds: number, maxClockSkewSeconds: number): number {
  const latest = Math.min(arrivalSeconds + maxClockSkewSeconds, MAX_TIMESTAMP);
  return deviceSeconds >= MIN_TIMESTAMP && deviceSeconds <= latest ? deviceSeconds : arrivalSeconds;
}

/**
 * Cuts a byte stream into frames by their length field, whatever the read sizes. Holds at most one
 * frame's bytes between reads. A length out of range stops it: the stream cannot be trusted to
 * resynchronise (a length is no marker), so the connection closes.
 */
export class FrameReader {
  #held: Buffer = Buffer.alloc(0);
  #broken = false;

  /** Bytes of an incomplete frame held from earlier reads: a partial frame at disconnect when non-zero. */
  get pendingBytes(): number {
    return this.#held.length;
  }

  /**
   * Calls `sink` with each whole frame `chunk` completes (a view valid during the call), in order,
   * until the sink answers false. Answers false when a length field was out of range: nothing more
   * is read from this stream.
   */
  push(chunk: Buffer, sink: (frame: Buffer) => boolean | void): boolean {
    if (this.#broken) return false;
    const bytes = this.#held.length === 0 ? chunk : Buffer.concat([this.#held, chunk]);
    let at = 0;
    while (bytes.length - at >= 2) {
      const length = bytes.readUInt16LE(at);
      if (length < MIN_FRAME_BYTES || length > MAX_FRAME_BYTES) {
        this.#broken = true;
        this.#held = Buffer.alloc(0);
        return false;
      }
      if (bytes.length - at < length) break;
      const more = sink(bytes.subarray(at, at + length));
      at += length;
      if (more === false) {
        this.#held = Buffer.alloc(0);
        this.#broken = true;
        return true;
      }
    }
    // Copied: the socket may reuse its chunk's memory once we return.
    this.#held = at === bytes.length ? Buffer.alloc(0) : Buffer.from(bytes.subarray(at));
    return true;
  }
}
