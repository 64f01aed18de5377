import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { splitAt } from './helpers.js';
import { decodeJsonChunks, decodeMessage, JsonSplitter, MAX_MESSAGE_BYTES, type DecodedMessage, type SplitEvent } from '../../src/collector/json-decoder.js';
import { MAX_MEASUREMENT, MIN_TIMESTAMP } from '../../src/records/schemas.js';

interface JsonCase {
  name: string;
  text: string;
  kind?: string;
  record?: Record<string, unknown>;
  rejected?: string;
}
const vectors = JSON.parse(readFileSync(new URL('../vectors/json-messages.json', import.meta.url), 'utf8')) as { cases: JsonCase[] };

/** A decoded message without its excerpt and detail (they depend on how the text was cut). */
type Outcome = { kind: string; record: unknown } | { rejected: string };
const outcome = (m: DecodedMessage): Outcome => (m.ok ? { kind: m.kind, record: m.record } : { rejected: m.reason });
const decode = (chunks: Buffer[], maxBytes?: number): Outcome[] => decodeJsonChunks(chunks, maxBytes).map(outcome);
const expectedOf = (c: JsonCase): Outcome => (c.kind !== undefined ? { kind: c.kind, record: c.record } : { rejected: c.rejected! });


test('each vector decodes to its kind and record, or its rejection', () => {
  for (const c of vectors.cases) {
    assert.deepStrictEqual(decode([Buffer.from(c.text)]), [expectedOf(c)], c.name);
  }
});

test('the vectors newline-delimited, back to back, or pretty-printed decode alike', () => {
  const want = vectors.cases.map(expectedOf);
  for (const separator of ['\n', '\r\n', '', ' ', '\n\n']) {
    const stream = Buffer.from(vectors.cases.map((c) => c.text).join(separator));
    assert.deepStrictEqual(decode([stream]), want, JSON.stringify(separator));
  }
  const pretty = vectors.cases.map((c) => {
    try {
      return JSON.stringify(JSON.parse(c.text), null, 2);
    } catch {
      return c.text;
    }
  });
  assert.deepStrictEqual(decode([Buffer.from(pretty.join('\n'))]), want);
});

test('the vector stream split at every offset, and one byte at a time, decodes the same', () => {
  const stream = Buffer.from(vectors.cases.map((c) => c.text).join('\n'));
  const want = vectors.cases.map(expectedOf);
  for (let cut = 0; cut <= stream.length; cut++) assert.deepStrictEqual(decode(splitAt(stream, [cut])), want, `cut at ${cut}`);
  assert.deepStrictEqual(decode([...stream].map((b) => Buffer.from([b]))), want);
});

test('braces, quotes and escapes inside strings do not cut a message', () => {
  const source = 'a}{b"\\}\n{"x":1}\u00e9\u{1F50B}';
  const text = JSON.stringify({ pack_voltage: 1, pack_current: 2, cell_temp: 3, source }) + JSON.stringify({ pack_voltage: 4, pack_current: 5, cell_temp: 6 });
  const out = decode([Buffer.from(text)]);
  assert.deepStrictEqual(out, [
    { kind: 'battery-data', record: { pack_voltage: 1, pack_current: 2, cell_temp: 3, source } },
    { kind: 'battery-data', record: { pack_voltage: 4, pack_current: 5, cell_temp: 6 } },
  ]);
});

test('a broken message loses only itself: resync at the next { or newline', () => {
  const good = '{"pack_voltage": 400, "pack_current": 1, "cell_temp": 25}';
  const goodOut = { kind: 'battery-data', record: { pack_voltage: 400, pack_current: 1, cell_temp: 25 } };
  const cases: [string, Outcome[]][] = [
    [`{"pack_voltage": 400, \n${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`{"pack_voltage": 400${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`{"pack_voltage": "40\n${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`{"pack_voltage": tru\n${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`garbage line\n${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`xx${good}yy\n${good}`, [{ rejected: 'malformed_json' }, goodOut, { rejected: 'malformed_json' }, goodOut]],
    [`{"a": 1.2.3}${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`{"a": 1}}${good}`, [{ rejected: 'unknown_kind' }, { rejected: 'malformed_json' }, goodOut]],
    [`{"a": [1, {"b": 2}]}\n${good}`, [{ rejected: 'unknown_kind' }, goodOut]],
    [`42\n"str"\nnull\n${good}`, [{ rejected: 'malformed_json' }, { rejected: 'malformed_json' }, { rejected: 'malformed_json' }, goodOut]],
    [`${'['.repeat(100)}\n${good}`, [{ rejected: 'malformed_json' }, goodOut]],
    [`\u00ff\u00fe${good}`, [{ rejected: 'malformed_json' }, goodOut]],
  ];
  for (const [text, want] of cases) assert.deepStrictEqual(decode([Buffer.from(text)]), want, text);
});

test('an unfinished message at the end of the stream is malformed', () => {
  assert.deepStrictEqual(decode([Buffer.from('{"pack_voltage": 400')]), [{ rejected: 'malformed_json' }]);
  assert.deepStrictEqual(decode([Buffer.from('   \n  ')]), []);
});

test('a message over 64 KiB is too_large, and the messages around it arrive', () => {
  const good = { pack_voltage: 400, pack_current: 1, cell_temp: 25 };
  const big = JSON.stringify({ ...good, source: 'x'.repeat(MAX_MESSAGE_BYTES) });
  const justFits = JSON.stringify({ ...good, firmware: 'y'.repeat(MAX_MESSAGE_BYTES - 80) });
  assert.ok(Buffer.byteLength(justFits) <= MAX_MESSAGE_BYTES);
  const text = `${JSON.stringify(good)}\n${big}${JSON.stringify(good)}\n${justFits}\n`;
  const want = [{ kind: 'battery-data', record: good }, { rejected: 'too_large' }, { kind: 'battery-data', record: good }, { kind: 'battery-data', record: good }];
  const stream = Buffer.from(text);
  assert.deepStrictEqual(decode([stream]), want);
  const chunks = [];
  for (let i = 0; i < stream.length; i += 1000) chunks.push(stream.subarray(i, i + 1000));
  assert.deepStrictEqual(decode(chunks), want);
});

test('an endless message is dropped without being held in memory', () => {
  const splitter = new JsonSplitter(1024);
  const events: SplitEvent[] = [];
  splitter.push(Buffer.from('{"source": "'), (e) => events.push(e));
  const filler = Buffer.alloc(64 * 1024, 'a');
  for (let i = 0; i < 100; i++) splitter.push(filler, (e) => events.push(e));
  assert.deepStrictEqual(events.map((e) => e.type === 'rejected' && e.reason), ['too_large']);
  assert.ok(events[0]!.type === 'rejected' && events[0]!.excerpt.length < 200);
  splitter.push(Buffer.from('"}{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3}'), (e) => events.push(e));
  assert.equal(events.length, 2);
  assert.equal(events[1]!.type, 'message');
});

test('invalid records carry the validation detail', () => {
  const decoded = decodeMessage('{"pack_voltage": "high", "pack_current": 1}');
  assert.equal(decoded.ok, false);
  assert.ok(!decoded.ok && decoded.reason === 'invalid_record');
  const locs = (decoded as { detail: { loc: unknown[] }[] }).detail.map((d) => d.loc.join('.'));
  assert.deepStrictEqual(locs.sort(), ['cell_temp', 'pack_voltage']);
});

test('non-finite numbers (1e999) are invalid records', () => {
  assert.deepStrictEqual(decode([Buffer.from('{"pack_voltage": 1e999, "pack_current": 1, "cell_temp": 2}')]), [{ rejected: 'invalid_record' }]);
});

test('per-cell arrays are kept as sent; a derived value a producer sends is dropped; a bad array makes an invalid record naming it', () => {
  const good = decodeMessage(
    '{"pack_voltage": 398.2, "pack_current": -1, "cell_temp": 25, "cell_voltages": [3.7, 3.71, 3.69], "cell_temps": [], "cell_voltage_delta": 9}',
  );
  assert.deepStrictEqual(outcome(good), {
    kind: 'battery-data',
    record: { pack_voltage: 398.2, pack_current: -1, cell_temp: 25, cell_voltages: [3.7, 3.71, 3.69], cell_temps: [] },
  });
  const cells = (values: string) => `{"pack_voltage": 1, "pack_current": 1, "cell_temp": 1, "cell_voltages": ${values}}`;
  for (const [values, loc] of [
    [`[${Array(1025).fill('3.7').join(',')}]`, 'cell_voltages'],
    ['[3.7, 1e999]', 'cell_voltages.1'],
    ['[3.7, "3.8"]', 'cell_voltages.1'],
    ['3.7', 'cell_voltages'],
  ] as const) {
    const decoded = decodeMessage(cells(values));
    assert.ok(!decoded.ok && decoded.reason === 'invalid_record', values.slice(0, 20));
    assert.deepStrictEqual(decoded.detail!.map((d) => d.loc.join('.')), [loc]);
  }
});

test('a timestamp outside plausible time is rejected as timestamp_out_of_range, naming the field', () => {
  const now = 1_800_000_000;
  const clock = { maxClockSkewSeconds: 86_400, now };
  const message = (timestamp: string) => `{"timestamp": ${timestamp}, "pack_voltage": 400, "pack_current": 1, "cell_temp": 25}`;
  // What schemathesis had stored: records no time window finds and retention removes at once.
  for (const timestamp of ['-8.97e219', '7.8e280', '946684799.9', String(now + 86_400 + 1)]) {
    const decoded = decodeMessage(message(timestamp), clock);
    assert.ok(!decoded.ok, timestamp);
    assert.equal(decoded.reason, 'timestamp_out_of_range', timestamp);
    assert.deepStrictEqual(decoded.detail?.map((d) => d.loc), [['timestamp']], timestamp);
  }
  for (const timestamp of ['946684800', String(now), String(now + 86_400)]) {
    assert.ok(decodeMessage(message(timestamp), clock).ok, timestamp);
  }
  // The bound is the setting's: a collector started with MAX_CLOCK_SKEW_SECONDS=60 refuses a minute and a second ahead.
  const tight = decodeJsonChunks([Buffer.from(message(String(now + 61)))], undefined, { maxClockSkewSeconds: 60, now });
  assert.deepStrictEqual(tight.map(outcome), [{ rejected: 'timestamp_out_of_range' }]);
  // Wrong in another way as well: an invalid record, not a clock problem.
  const both = decodeMessage('{"timestamp": 7.8e280, "pack_voltage": "high", "pack_current": 1, "cell_temp": 25}', clock);
  assert.ok(!both.ok && both.reason === 'invalid_record');
});

test('measurements beyond ±3.4e38 and cycle counts beyond 2^53 are invalid records', () => {
  assert.deepStrictEqual(decode([Buffer.from('{"pack_voltage": 1.7e308, "pack_current": 1, "cell_temp": 2}')]), [{ rejected: 'invalid_record' }]);
  const performance = (cycles: string) =>
    `{"pack_voltage": 396, "pack_current": -10, "cell_temp": 30, "capacity_remaining": 87.5, "cycle_count": ${cycles}, "age_months": 18, "health_score": 92.3}`;
  assert.deepStrictEqual(decode([Buffer.from(performance('2.9e27'))]), [{ rejected: 'invalid_record' }]);
  assert.deepStrictEqual(decode([Buffer.from(performance('9007199254740992'))]), [{ rejected: 'invalid_record' }]);
  assert.equal(decode([Buffer.from(performance('9007199254740991'))]).length, 1);
  assert.ok('kind' in decode([Buffer.from(performance('9007199254740991'))])[0]!);
});

// ---- properties ----

const batteryId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,20}$/);
// JSON has no -0: JSON.stringify(-0) is "0". Valid measurements are within ±MAX_MEASUREMENT.
const num = fc.double({ noNaN: true, min: -MAX_MEASUREMENT, max: MAX_MEASUREMENT }).map((x) => (x === 0 ? 0 : x));
// Plausible time: from 2000-01-01 to now (the decoder's clock only moves on from here).
const plausibleTime = fc.double({ noNaN: true, min: MIN_TIMESTAMP, max: Date.now() / 1000 });
const source = fc.string({ minLength: 1, maxLength: 30, unit: fc.constantFrom('{', '}', '"', '\\', '\n', 'a', 'é', '🔋', '[', ']', ' ', ':', ',') });
const common = { timestamp: fc.option(plausibleTime, { nil: undefined }), battery_id: fc.option(batteryId, { nil: undefined }), source: fc.option(source, { nil: undefined }) };
const dataRecord = fc.record({ ...common, pack_voltage: num, pack_current: num, cell_temp: num }, { requiredKeys: ['pack_voltage', 'pack_current', 'cell_temp'] });
const perfRecord = fc.record(
  { ...common, pack_voltage: num, pack_current: num, cell_temp: num, capacity_remaining: num, cycle_count: fc.integer(), age_months: num, health_score: num },
  { requiredKeys: ['pack_voltage', 'pack_current', 'cell_temp', 'capacity_remaining', 'cycle_count', 'age_months', 'health_score'] },
);
const predRecord = fc.record(
  { ...common, remaining_life_hours: num, remaining_cycles: num, degradation_rate: num },
  { requiredKeys: ['remaining_life_hours', 'remaining_cycles', 'degradation_rate'] },
);
const strip = (r: Record<string, unknown>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined));
const validMessage = fc.oneof(
  dataRecord.map((r) => ({ kind: 'battery-data', record: strip(r) })),
  perfRecord.map((r) => ({ kind: 'battery-performance', record: strip(r) })),
  predRecord.map((r) => ({ kind: 'battery-prediction', record: strip(r) })),
);
const separator = fc.constantFrom('', '\n', '\r\n', ' ', '\n\n', '\t');
const layout = fc.constantFrom(0, 2);

test('property: any split of any valid stream decodes to the same records', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(validMessage, separator, layout), { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
      const text = messages.map(([m, sep, indent]) => JSON.stringify(m.record, null, indent) + sep).join('');
      const stream = Buffer.from(text);
      const want = messages.map(([m]) => m);
      assert.deepStrictEqual(decode([stream]), want);
      assert.deepStrictEqual(decode(splitAt(stream, cuts.map((c) => c % (stream.length + 1)))), want);
    }),
    { numRuns: 300 },
  );
});

test('property: one byte at a time decodes the same records', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(validMessage, separator), { maxLength: 5 }), (messages) => {
      const stream = Buffer.from(messages.map(([m, sep]) => JSON.stringify(m.record) + sep).join(''));
      assert.deepStrictEqual(decode([...stream].map((b) => Buffer.from([b]))), messages.map(([m]) => m));
    }),
    { numRuns: 100 },
  );
});

/** Good messages with bad ones mixed in: cut short (then a control byte, so that no later piece completes it), garbage, unknown kind, too large. */
const badMessage = fc.oneof(
  validMessage.chain((m) => fc.nat().map((n) => { const t = JSON.stringify(m.record); return `${t.slice(0, n % t.length)}\u0001\n`; })),
  fc.constantFrom('garbage\n', '{"hello": "world"}', '[1,2]', '{"pack_voltage": "x", "pack_current": 1, "cell_temp": 2}', `{"source":"${'z'.repeat(300)}"}`, '}\n', '{{{\n'),
);

test('property: good messages survive among bad ones, under any split', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(validMessage.map((m) => ({ good: m })), badMessage.map((bad) => ({ bad }))), { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 20 }), (items, cuts) => {
      // Each good message starts on its own line so that resync after a bad one always reaches it.
      const text = items.map((item) => ('good' in item ? `\n${JSON.stringify(item.good.record)}\n` : item.bad)).join('');
      const stream = Buffer.from(text);
      const whole = decode([stream], 256);
      const goods = whole.filter((o) => 'kind' in o);
      assert.deepStrictEqual(goods, items.flatMap((item) => ('good' in item && Buffer.byteLength(JSON.stringify(item.good.record)) <= 256 ? [item.good] : [])));
      assert.deepStrictEqual(decode(splitAt(stream, cuts.map((c) => c % (stream.length + 1))), 256), whole);
    }),
    { numRuns: 300 },
  );
});

test('property: arbitrary bytes in arbitrary chunks never throw and decode the same however split', () => {
  const byte = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(...Buffer.from('{}[]":,\\\n 0123456789.-etrufalsn')));
  fc.assert(
    fc.property(fc.array(byte, { maxLength: 400 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const stream = Buffer.from(bytes);
      const whole = decode([stream], 128);
      assert.deepStrictEqual(decode(splitAt(stream, cuts.map((c) => c % (stream.length + 1))), 128), whole);
    }),
    { numRuns: 1000 },
  );
});
