/**
 * The C++ library's readings with cells (clients/cpp, encode_cell_reading) against the service's JSON
 * decoder: the exact bytes in cell-messages.json, which the C++ test_vectors checks the encoder
 * produces, decode to battery-data records carrying the same cells.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { decodeJsonChunks, MAX_MESSAGE_BYTES, type DecodedMessage } from '../../src/collector/json-decoder.js';

interface CellCase {
  name: string;
  reading: Record<string, unknown>;
  line: string;
}
const vectors = JSON.parse(readFileSync(new URL('./cell-messages.json', import.meta.url), 'utf8')) as {
  max_cells: number;
  max_message_bytes: number;
  cases: CellCase[];
};

/**
 * Every field the library sent is in the decoded record with the same value (-0 included). Fields the
 * service adds on its own (derived cell statistics, if it derives them while decoding) are not the
 * library's business.
 */
function assertCarries(message: DecodedMessage | undefined, reading: Record<string, unknown>, name: string): void {
  assert.ok(message?.ok, `${name}: rejected (${message && !message.ok ? message.reason : 'no message'})`);
  assert.equal(message.kind, 'battery-data', name);
  for (const [field, value] of Object.entries(reading)) assert.deepStrictEqual(message.record[field], value, `${name}: ${field}`);
}

test('each line the C++ library encodes decodes to its reading, cells included', () => {
  for (const c of vectors.cases) {
    const decoded = decodeJsonChunks([Buffer.from(c.line)]);
    assert.equal(decoded.length, 1, c.name);
    assertCarries(decoded[0], c.reading, c.name);
  }
});

test('the lines back to back on one connection, cut into small reads, decode in order', () => {
  const stream = Buffer.from(vectors.cases.map((c) => c.line).join(''));
  const chunks: Buffer[] = [];
  for (let at = 0; at < stream.length; at += 1000) chunks.push(stream.subarray(at, at + 1000));
  const decoded = decodeJsonChunks(chunks);
  assert.equal(decoded.length, vectors.cases.length);
  vectors.cases.forEach((c, i) => assertCarries(decoded[i], c.reading, c.name));
});

test("the library's longest message fits the collector's limit and decodes with all its cells", () => {
  assert.ok(vectors.max_message_bytes <= MAX_MESSAGE_BYTES, `${vectors.max_message_bytes} > ${MAX_MESSAGE_BYTES}`);
  // What the C++ encoder writes for max_cells values per array, each as long as %.17g makes a number.
  const longest = '-2.2250738585072014e-308';
  const cells = Array(vectors.max_cells).fill(longest).join(',');
  const line = `{"timestamp":1732700000.5,"pack_voltage":${longest},"pack_current":${longest},"cell_temp":${longest},"cell_voltages":[${cells}],"cell_temps":[${cells}],"battery_id":"${'x'.repeat(64)}"}\n`;
  assert.ok(Buffer.byteLength(line) <= vectors.max_message_bytes);
  const decoded = decodeJsonChunks([Buffer.from(line)]);
  const expectedCells = Array(vectors.max_cells).fill(Number(longest));
  assertCarries(decoded[0], { cell_voltages: expectedCells, cell_temps: expectedCells }, 'longest message');
});
