/**
 * Binary frames from the battery monitor (TCP port 23456): framing and decoding, pure functions
 * over bytes, kept apart from sockets so they are tested byte by byte and fuzzed.
 *
 * Wire layout of one frame: 16 bytes, four little-endian IEEE-754 float32, no header, no pack id.
 *
 * ```
 *  offset  0        4             8             12           16
 *          +--------+-------------+-------------+------------+
 *          | time   | pack_voltage| pack_current| cell_temp  |
 *          | f32 LE | f32 LE (V)  | f32 LE (A)  | f32 LE (°C)|
 *          +--------+-------------+-------------+------------+
 * ```
 *
 * `time` is the device's clock (often seconds since it started; as epoch seconds a float32 is only
 * good to about two minutes), so it is kept as `device_time` and the stored `timestamp` is the
 * arrival time. A frame holding NaN or ±Infinity in any field is rejected as `non_finite`.
 *
 * TCP keeps no frame boundaries: a read may hold half a frame or many. FrameAssembler walks each
 * chunk in place and keeps at most 15 leftover bytes in a fixed 16-byte buffer, so the cost is
 * O(bytes) with one 16-byte copy per frame that straddles two reads; chunks are never concatenated.
 */
import { DEFAULT_BATTERY_ID, KINDS, type NewRecord } from '../records/kinds.js';

export const FRAME_BYTES = 16;

export interface FrameValues {
  device_time: number;
  pack_voltage: number;
  pack_current: number;
  cell_temp: number;
}

export type FrameRejection = 'non_finite';

export type DecodedFrame = ({ ok: true } & FrameValues) | { ok: false; reason: FrameRejection };

/** Decodes the 16 bytes at `offset` (the caller guarantees they are there). */
export function decodeFrame(buf: Buffer, offset: number): DecodedFrame {
  const device_time = buf.readFloatLE(offset);
  const pack_voltage = buf.readFloatLE(offset + 4);
  const pack_current = buf.readFloatLE(offset + 8);
  const cell_temp = buf.readFloatLE(offset + 12);
  // x - x is 0 for every finite x and NaN for NaN and ±Infinity: one test for all four.
  if (Number.isNaN(device_time - device_time + (pack_voltage - pack_voltage) + (pack_current - pack_current) + (cell_temp - cell_temp))) {
    return { ok: false, reason: 'non_finite' };
  }
  return { ok: true, device_time, pack_voltage, pack_current, cell_temp };
}

/** Encodes one frame (simulator, tests, benchmarks). Values are rounded to float32. */
export function encodeFrame(values: FrameValues, target: Buffer = Buffer.allocUnsafe(FRAME_BYTES), offset = 0): Buffer {
  target.writeFloatLE(values.device_time, offset);
  target.writeFloatLE(values.pack_voltage, offset + 4);
  target.writeFloatLE(values.pack_current, offset + 8);
  target.writeFloatLE(values.cell_temp, offset + 12);
  return target;
}

/** Called once per complete frame: its 16 bytes are `buf[offset .. offset + 16)`, valid only during the call. */
export type FrameSink = (buf: Buffer, offset: number) => void;

/**
 * Cuts a byte stream into 16-byte frames, whatever the read sizes. One per connection.
 */
export class FrameAssembler {
  readonly #partial = Buffer.alloc(FRAME_BYTES);
  #partialLength = 0;

  /** Bytes of an incomplete frame held from earlier chunks (0-15). Non-zero at disconnect: a partial frame. */
  get pendingBytes(): number {
    return this.#partialLength;
  }

  /** Calls `sink` for every frame completed by `chunk`; answers how many. */
  push(chunk: Buffer, sink: FrameSink): number {
    let offset = 0;
    let frames = 0;
    if (this.#partialLength > 0) {
      const take = Math.min(FRAME_BYTES - this.#partialLength, chunk.length);
      chunk.copy(this.#partial, this.#partialLength, 0, take);
      this.#partialLength += take;
      offset = take;
      if (this.#partialLength < FRAME_BYTES) return 0;
      this.#partialLength = 0;
      sink(this.#partial, 0);
      frames++;
    }
    const end = chunk.length - ((chunk.length - offset) % FRAME_BYTES);
    for (; offset < end; offset += FRAME_BYTES) {
      sink(chunk, offset);
      frames++;
    }
    if (offset < chunk.length) {
      chunk.copy(this.#partial, 0, offset);
      this.#partialLength = chunk.length - offset;
    }
    return frames;
  }

  /** Drops held bytes; answers how many there were (a partial frame when non-zero). */
  reset(): number {
    const dropped = this.#partialLength;
    this.#partialLength = 0;
    return dropped;
  }
}

const BATTERY_DATA_SOURCE = KINDS['battery-data'].defaultSource;

/** A battery-data record from a decoded frame; `arrivalSeconds` is Unix seconds with millisecond precision. */
export function frameToRecord(frame: FrameValues, arrivalSeconds: number, batteryId: string = DEFAULT_BATTERY_ID): NewRecord {
  return {
    timestamp: arrivalSeconds,
    source: BATTERY_DATA_SOURCE,
    battery_id: batteryId,
    received_at: arrivalSeconds,
    device_time: frame.device_time,
    values: { pack_voltage: frame.pack_voltage, pack_current: frame.pack_current, cell_temp: frame.cell_temp },
  };
}

/**
 * decodeFrame and frameToRecord in one step, for the collector's hot path: one record object per
 * good frame and nothing else allocated; `undefined` for a non-finite frame.
 */
export function decodeFrameRecord(buf: Buffer, offset: number, arrivalSeconds: number, batteryId: string): NewRecord | undefined {
  const device_time = buf.readFloatLE(offset);
  const pack_voltage = buf.readFloatLE(offset + 4);
  const pack_current = buf.readFloatLE(offset + 8);
  const cell_temp = buf.readFloatLE(offset + 12);
  if (Number.isNaN(device_time - device_time + (pack_voltage - pack_voltage) + (pack_current - pack_current) + (cell_temp - cell_temp))) return undefined;
  return {
    timestamp: arrivalSeconds,
    source: BATTERY_DATA_SOURCE,
    battery_id: batteryId,
    received_at: arrivalSeconds,
    device_time,
    values: { pack_voltage, pack_current, cell_temp },
  };
}

/** Arrival time as the collector stamps it: Unix seconds, millisecond precision. */
export const arrivalSeconds = (nowMs: number = Date.now()): number => Math.round(nowMs) / 1000;

/** Decodes a whole byte sequence given as chunks (tests, tools): good frames, rejections and leftover bytes. */
export function decodeChunks(chunks: Iterable<Buffer>): { frames: FrameValues[]; rejected: FrameRejection[]; leftoverBytes: number } {
  const assembler = new FrameAssembler();
  const frames: FrameValues[] = [];
  const rejected: FrameRejection[] = [];
  const sink: FrameSink = (buf, offset) => {
    const decoded = decodeFrame(buf, offset);
    if (decoded.ok) {
      const { ok: _ok, ...values } = decoded;
      frames.push(values);
    } else rejected.push(decoded.reason);
  };
  for (const chunk of chunks) assembler.push(chunk, sink);
  return { frames, rejected, leftoverBytes: assembler.pendingBytes };
}
