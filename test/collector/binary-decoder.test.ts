import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { splitAt } from './helpers.js';
import {
  decodeChunks,
  decodeFrame,
  encodeFrame,
  FRAME_BYTES,
  FrameAssembler,
  frameValuesOf,
  viewOf,
  type FrameValues,
} from '../../src/collector/binary-decoder.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';

interface BinaryCase {
  name: string;
  hex: string;
  record?: FrameValues;
  rejected?: string;
}
const vectors = JSON.parse(readFileSync(new URL('../vectors/binary-frames.json', import.meta.url), 'utf8')) as {
  frame_bytes: number;
  cases: BinaryCase[];
};

/** What a whole stream decodes to, frame by frame, as comparable values. */
type Outcome = FrameValues | { rejected: string };
function expected(cases: BinaryCase[]): Outcome[] {
  return cases.map((c) => (c.record !== undefined ? c.record : { rejected: c.rejected! }));
}
const ARRIVAL = 1732700000.123;

/** One frame at `offset` decoded as the collector decodes it: its values, or its rejection. */
function decodeOne(bytes: DataView, offset: number, batch = new RecordBatch('battery-data')): Outcome {
  return decodeFrame(bytes, offset, ARRIVAL, 'default', batch) ? frameValuesOf(batch, batch.length - 1) : { rejected: 'non_finite' };
}

function decodeAll(chunks: Buffer[]): { outcomes: Outcome[]; leftover: number } {
  const assembler = new FrameAssembler();
  const batch = new RecordBatch('battery-data');
  const outcomes: Outcome[] = [];
  for (const chunk of chunks) assembler.push(chunk, (buf, offset) => outcomes.push(decodeOne(buf, offset, batch)));
  return { outcomes, leftover: assembler.pendingBytes };
}

const vectorStream = Buffer.concat(vectors.cases.map((c) => Buffer.from(c.hex, 'hex')));

test('the vectors agree with the frame size', () => {
  assert.equal(vectors.frame_bytes, FRAME_BYTES);
  for (const c of vectors.cases) assert.equal(Buffer.from(c.hex, 'hex').length, FRAME_BYTES, c.name);
});

test('each vector decodes to its values or its rejection', () => {
  for (const c of vectors.cases) {
    const batch = new RecordBatch('battery-data');
    const stored = decodeFrame(viewOf(Buffer.from(c.hex, 'hex')), 0, ARRIVAL, 'pack-1', batch);
    if (c.record !== undefined) {
      assert.ok(stored, c.name);
      assert.deepStrictEqual(frameValuesOf(batch, 0), c.record, c.name);
    } else {
      assert.equal(stored, false, c.name);
      assert.equal(batch.length, 0, `${c.name}: a rejected frame adds no row`);
      assert.equal(c.rejected, 'non_finite', c.name);
    }
  }
});

test('encodeFrame writes the vector bytes back', () => {
  for (const c of vectors.cases) {
    if (c.record === undefined) continue;
    assert.equal(encodeFrame(c.record).toString('hex'), c.hex, c.name);
  }
});

test('decodeFrame reads at an offset', () => {
  const buf = Buffer.concat([Buffer.from([1, 2, 3]), Buffer.from(vectors.cases[0]!.hex, 'hex')]);
  assert.deepStrictEqual(decodeOne(viewOf(buf), 3), vectors.cases[0]!.record);
});

test('the vector stream split at every offset, and at every pair of offsets, decodes the same', () => {
  const want = expected(vectors.cases);
  for (let a = 0; a <= vectorStream.length; a++) {
    assert.deepStrictEqual(decodeAll(splitAt(vectorStream, [a])), { outcomes: want, leftover: 0 }, `cut at ${a}`);
    for (let b = a; b <= Math.min(vectorStream.length, a + 40); b++) {
      assert.deepStrictEqual(decodeAll(splitAt(vectorStream, [a, b])).outcomes, want, `cuts at ${a}, ${b}`);
    }
  }
});

test('one byte at a time decodes the same', () => {
  const chunks = [...vectorStream].map((byte) => Buffer.from([byte]));
  assert.deepStrictEqual(decodeAll(chunks), { outcomes: expected(vectors.cases), leftover: 0 });
});

test('empty chunks change nothing', () => {
  const chunks = splitAt(vectorStream, [0, 0, 5, 5, 16, 16, vectorStream.length]);
  assert.deepStrictEqual(decodeAll(chunks).outcomes, expected(vectors.cases));
});

test('a partial frame at the end is held, reported and can be dropped', () => {
  const assembler = new FrameAssembler();
  let frames = 0;
  assembler.push(vectorStream.subarray(0, 16 + 7), () => frames++);
  assert.equal(frames, 1);
  assert.equal(assembler.pendingBytes, 7);
  assert.equal(assembler.reset(), 7);
  assert.equal(assembler.pendingBytes, 0);
});

test('a decoded frame is a record stamped with its arrival time, keeping the device time', () => {
  const batch = new RecordBatch('battery-data');
  const frame = encodeFrame({ device_time: 1234.5, pack_voltage: 398.25, pack_current: -120.5, cell_temp: 31.75 });
  assert.ok(decodeFrame(viewOf(frame), 0, ARRIVAL, 'pack-1', batch));
  assert.deepStrictEqual(batch.record(0, '7'), {
    _id: '7',
    timestamp: ARRIVAL,
    received_at: ARRIVAL,
    source: 'battery_monitor',
    battery_id: 'pack-1',
    device_time: 1234.5,
    pack_voltage: 398.25,
    pack_current: -120.5,
    cell_temp: 31.75,
  });
});

/** Any float32, NaN and infinities included, as raw 4-byte patterns. */
const float32Bits = fc.integer({ min: 0, max: 0xffffffff });
const frameBytes = fc.tuple(float32Bits, float32Bits, float32Bits, float32Bits).map(([a, b, c, d]) => {
  const buf = Buffer.alloc(16);
  buf.writeUInt32LE(a, 0);
  buf.writeUInt32LE(b, 4);
  buf.writeUInt32LE(c, 8);
  buf.writeUInt32LE(d, 12);
  return buf;
});
/** Frames biased to finite, realistic values, with non-finite ones mixed in. */
const anyFrame = fc.oneof(
  { weight: 3, arbitrary: fc.record({
    device_time: fc.float({ noNaN: true, noDefaultInfinity: true }),
    pack_voltage: fc.float({ min: 0, max: 1000, noNaN: true }),
    pack_current: fc.float({ min: -300, max: 300, noNaN: true }),
    cell_temp: fc.float({ min: -40, max: 80, noNaN: true }),
  }).map((v) => encodeFrame(v)) },
  { weight: 1, arbitrary: frameBytes },
);

test('property: any split of any frame stream decodes to the same frames as the whole stream', () => {
  fc.assert(
    fc.property(fc.array(anyFrame, { maxLength: 40 }), fc.array(fc.nat(), { maxLength: 30 }), fc.nat({ max: 15 }), (frames, cuts, tail) => {
      const stream = Buffer.concat([...frames, Buffer.alloc(tail, 0xab)]);
      const whole = decodeAll([stream]);
      assert.equal(whole.outcomes.length, frames.length);
      assert.equal(whole.leftover, tail);
      const scaled = cuts.map((c) => c % (stream.length + 1));
      assert.deepStrictEqual(decodeAll(splitAt(stream, scaled)), whole);
    }),
    { numRuns: 500 },
  );
});

test('property: one byte at a time decodes the same as the whole stream', () => {
  fc.assert(
    fc.property(fc.array(anyFrame, { maxLength: 12 }), (frames) => {
      const stream = Buffer.concat(frames);
      const bytes = [...stream].map((b) => Buffer.from([b]));
      assert.deepStrictEqual(decodeAll(bytes), decodeAll([stream]));
    }),
    { numRuns: 200 },
  );
});

test('property: a frame is rejected exactly when one of its values is not finite', () => {
  fc.assert(
    fc.property(frameBytes, (buf) => {
      const values = [0, 4, 8, 12].map((o) => buf.readFloatLE(o));
      assert.equal(decodeFrame(viewOf(buf), 0, ARRIVAL, 'default', new RecordBatch('battery-data')), values.every(Number.isFinite));
    }),
    { numRuns: 2000 },
  );
});

test('property: arbitrary bytes in arbitrary chunks never throw', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 20 }), (arrays) => {
      const chunks = arrays.map((a) => Buffer.from(a));
      const total = chunks.reduce((n, c) => n + c.length, 0);
      const { frames, rejected, leftoverBytes } = decodeChunks(chunks);
      assert.equal(frames.length + rejected.length, Math.floor(total / 16));
      assert.equal(leftoverBytes, total % 16);
    }),
    { numRuns: 500 },
  );
});
