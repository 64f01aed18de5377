/**
 * Edge protocol v2 (docs/protocol.md) against the shared vectors in v2-frames.json, written from the
 * wire format by an independent encoder and read by the C++ client's tests too: every handshake and
 * frame decodes (or is refused) as the file says, and the answers and acks the service writes are
 * the file's bytes. Then the decoder fuzzed: arbitrary bytes, and good frames with random corruption,
 * never throw, and a frame whose CRC fails never becomes a record.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  crc32cOf,
  FLAG_SKIPPED,
  decodeFrame,
  encodeAck,
  encodeAnswer,
  encodeFrame,
  encodeHandshake,
  FrameReader,
  parseAck,
  parseAnswer,
  parseHandshake,
  type DecodedFrame,
  type HandshakeStatus,
} from '../../src/collector/v2/wire.js';

interface Vectors {
  crc32c_check: { ascii: string; crc: number };
  handshakes: { name: string; battery_id: string; stream_id: string; hex: string }[];
  bad_handshakes: { name: string; status: number; hex: string }[];
  answers: { name: string; status: number; resume_after: string; max_frame_bytes: number; hex: string }[];
  frames: {
    name: string;
    valid: boolean;
    kind?: string;
    sequence?: string;
    /** The flags byte; absent: 0. */
    flags?: number;
    timestamp?: number;
    fields?: Record<string, number>;
    cell_voltages?: number[];
    cell_temps?: number[];
    error?: string;
    hex: string;
  }[];
  acks: { sequence: string; hex: string }[];
}

const vectors = JSON.parse(readFileSync(new URL('./v2-frames.json', import.meta.url), 'utf8')) as Vectors;
const bytes = (hex: string) => Buffer.from(hex, 'hex');
const show = (value: unknown) => JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v));

/** What the listener makes of a connection that sends `stream` and ends: each frame's outcome, then a partial frame if bytes were left. */
function outcomes(stream: Buffer, readSize = stream.length): (DecodedFrame | 'partial_frame' | 'bad_length')[] {
  const reader = new FrameReader();
  const seen: (DecodedFrame | 'partial_frame' | 'bad_length')[] = [];
  for (let at = 0; at < stream.length; at += readSize) {
    const good = reader.push(stream.subarray(at, at + readSize), (frame) => {
      const decoded = decodeFrame(frame);
      seen.push(decoded);
      return decoded.ok || !decoded.fatal;
    });
    if (!good) {
      seen.push('bad_length');
      return seen;
    }
  }
  if (reader.pendingBytes > 0) seen.push('partial_frame');
  return seen;
}

describe('edge protocol v2 vectors', () => {
  it('CRC-32C check value', () => {
    assert.equal(crc32cOf(Buffer.from(vectors.crc32c_check.ascii, 'latin1')), vectors.crc32c_check.crc);
  });

  for (const vector of vectors.handshakes) {
    it(`handshake: ${vector.name}`, () => {
      const parsed = parseHandshake(bytes(vector.hex));
      assert.ok(parsed.done && parsed.ok, show(parsed));
      assert.equal(parsed.handshake.batteryId, vector.battery_id);
      assert.equal(parsed.handshake.streamId, BigInt(`0x${vector.stream_id}`));
      assert.equal(parsed.bytes, vector.hex.length / 2);
      assert.equal(encodeHandshake(vector.battery_id, BigInt(`0x${vector.stream_id}`)).toString('hex'), vector.hex);
      // Read a byte at a time, it is "not yet" until the last byte.
      const whole = bytes(vector.hex);
      for (let n = 1; n < whole.length; n++) assert.equal(parseHandshake(whole.subarray(0, n)).done, false, `${n} bytes`);
    });
  }

  for (const vector of vectors.bad_handshakes) {
    it(`bad handshake: ${vector.name} -> status ${vector.status}`, () => {
      const parsed = parseHandshake(bytes(vector.hex));
      assert.ok(parsed.done && !parsed.ok, show(parsed));
      assert.equal(parsed.status, vector.status);
    });
  }

  for (const vector of vectors.answers) {
    it(`answer: ${vector.name}`, () => {
      const answer = encodeAnswer(vector.status as HandshakeStatus, BigInt(vector.resume_after), vector.max_frame_bytes);
      assert.equal(answer.toString('hex'), vector.hex);
      assert.deepEqual(parseAnswer(answer), { status: vector.status, resumeAfter: BigInt(vector.resume_after), maxFrameBytes: vector.max_frame_bytes });
    });
  }

  for (const vector of vectors.acks) {
    it(`ack ${vector.sequence}`, () => {
      assert.equal(encodeAck(BigInt(vector.sequence)).toString('hex'), vector.hex);
      assert.equal(parseAck(bytes(vector.hex)), BigInt(vector.sequence));
    });
  }

  for (const vector of vectors.frames) {
    it(`frame: ${vector.name}`, () => {
      for (const readSize of [vector.hex.length / 2, 1, 7]) {
        const seen = outcomes(bytes(vector.hex), readSize);
        assert.equal(seen.length, 1, `${readSize}-byte reads: ${seen.length} outcomes`);
        const [outcome] = seen;
        if (vector.valid) {
          assert.ok(typeof outcome === 'object' && outcome.ok, `${readSize}-byte reads: ${show(outcome)}`);
          assert.equal(outcome.kind, vector.kind);
          assert.equal(outcome.sequence, BigInt(vector.sequence!));
          // Bit 0 says the device skipped sequences before it; the other bits are reserved and ignored.
          assert.equal(outcome.skipped, ((vector.flags ?? 0) & FLAG_SKIPPED) !== 0);
          assert.equal(outcome.timestamp, vector.timestamp);
          assert.equal(outcome.record.timestamp, vector.timestamp);
          for (const [field, value] of Object.entries(vector.fields!)) assert.equal(outcome.record[field], value, field);
          assert.deepEqual(outcome.record.cell_voltages, vector.cell_voltages);
          assert.deepEqual(outcome.record.cell_temps, vector.cell_temps);
          if (vector.kind === 'battery-data') assert.equal(outcome.record.device_time, vector.timestamp);
          // The service's encoder (the test device's) writes the same bytes.
          const type = { 'battery-data': 1, 'battery-performance': 2, 'battery-prediction': 3 }[vector.kind!]!;
          const encoded = encodeFrame({ type, sequence: BigInt(vector.sequence!), flags: vector.flags, timestamp: vector.timestamp!, fields: vector.fields!, ...cells(vector) });
          assert.equal(encoded.toString('hex'), vector.hex);
        } else if (vector.error === 'partial_frame') {
          assert.equal(outcome, 'partial_frame');
        } else if (vector.error === 'malformed') {
          // A length out of range stops the reader; a size wrong for the type is a malformed frame: either closes the connection.
          assert.ok(outcome === 'bad_length' || (typeof outcome === 'object' && !outcome.ok && outcome.fatal && outcome.reason === 'malformed'), String(outcome));
          const decoded = decodeFrame(bytes(vector.hex));
          assert.ok(!decoded.ok && decoded.fatal && decoded.reason === 'malformed');
        } else if (vector.error === 'bad_crc') {
          assert.ok(typeof outcome === 'object' && !outcome.ok && outcome.fatal && outcome.reason === 'bad_crc');
        } else {
          // Refused for good: acknowledged, counted under its reason, not stored.
          assert.ok(typeof outcome === 'object' && !outcome.ok && !outcome.fatal, String(outcome));
          assert.equal(outcome.reason, vector.error);
          assert.equal(outcome.sequence, BigInt(vector.sequence!));
        }
      }
    });
  }
});

const cells = (vector: { cell_voltages?: number[]; cell_temps?: number[] }) => ({
  ...(vector.cell_voltages === undefined ? {} : { cell_voltages: vector.cell_voltages }),
  ...(vector.cell_temps === undefined ? {} : { cell_temps: vector.cell_temps }),
});

describe('edge protocol v2 decoder, fuzzed', () => {
  const goodFrames = vectors.frames.filter((vector) => vector.valid).map((vector) => bytes(vector.hex));

  it('arbitrary bytes never throw, as a handshake or as frames in reads of any size', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.integer({ min: 1, max: 64 }), (data, readSize) => {
        const buffer = Buffer.from(data);
        parseHandshake(buffer);
        parseAnswer(buffer);
        parseAck(buffer);
        decodeFrame(buffer);
        outcomes(buffer, readSize);
      }),
      { numRuns: 2000 },
    );
  });

  it('a good frame with bytes changed yields no record unless its CRC holds', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...goodFrames),
        fc.array(fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 64 }),
        (good, flips, readSize) => {
          const frame = Buffer.from(good);
          for (const { at, xor } of flips) frame[at % frame.length]! ^= xor;
          const crcHolds = frame.readUInt32LE(frame.length - 4) === crc32cOf(frame, 0, frame.length - 4);
          for (const outcome of outcomes(frame, readSize)) {
            if (typeof outcome === 'object' && outcome.ok) assert.ok(crcHolds, 'a record from a frame whose CRC fails');
          }
          // A CRC-32 finds every error within 32 consecutive bits: one changed byte always breaks it.
          if (flips.length === 1) assert.ok(!crcHolds);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('a good frame cut short or followed by garbage: the good frame is read once, nothing else is a record', () => {
    fc.assert(
      fc.property(fc.constantFrom(...goodFrames), fc.uint8Array({ maxLength: 100 }), fc.integer({ min: 1, max: 64 }), (good, tail, readSize) => {
        const stream = Buffer.concat([good, Buffer.from(tail)]);
        const seen = outcomes(stream, readSize);
        const records = seen.filter((outcome) => typeof outcome === 'object' && outcome.ok);
        // A random tail could be a valid frame only by carrying a matching CRC-32C: 1 in 2^32.
        assert.equal(records.length, 1);
        const cut = outcomes(good.subarray(0, Math.max(0, good.length - 1 - (tail.length % good.length))), readSize);
        assert.ok(cut.every((outcome) => !(typeof outcome === 'object' && outcome.ok)));
      }),
      { numRuns: 2000 },
    );
  });
});
