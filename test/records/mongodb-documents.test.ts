/**
 * MongoDB documents as the kinds table derives them: the mapping both ways, and validation by the
 * API's own validator, so that the store refuses what a POST is refused, with the same detail.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ObjectId } from 'mongodb';
import { ALL_KINDS, type KindName, type RecordInput } from '../../src/records/kinds.js';
import { MAX_MEASUREMENT } from '../../src/records/schemas.js';
import { validateBody } from '../../src/records/validate.js';
import { fromDocument, projectionFor, recordDetail, recordProblem, TIME_FIELD, toDocument } from '../../src/store/mongodb-documents.js';
import { batchOf, RECEIVED_AT } from '../store/conformance.js';
import { exampleInput } from './examples.js';

test('a document reads back as the record it was made from, every field of every kind', () => {
  for (const kind of ALL_KINDS) {
    const batch = batchOf(kind.name, [exampleInput(kind.name), { ...exampleInput(kind.name), key: 'k-1' }]);
    for (const row of [0, 1]) {
      const id = new ObjectId();
      const doc = toDocument(batch, row, id);
      assert.deepEqual(doc[TIME_FIELD], new Date(Math.floor((doc.timestamp as number) * 1000)));
      assert.equal(doc.key, row === 1 ? 'k-1' : undefined);
      assert.deepEqual(fromDocument(kind.name, doc), batch.record(row, id.toHexString()));
      assert.deepEqual(Object.keys(projectionFor(kind.name)), Object.keys(batch.record(row, '')));
    }
  }
});

test('the MongoDB store refuses a record a POST is refused, with the same 422 detail', () => {
  const bad: [KindName, RecordInput][] = [
    ['battery-data', { ...exampleInput('battery-data'), source: 'x'.repeat(129) }],
    ['battery-data', { ...exampleInput('battery-data'), battery_id: 'bad id with spaces' }],
    ['battery-data', { ...exampleInput('battery-data'), timestamp: 0, pack_voltage: MAX_MEASUREMENT * 2 }],
    ['battery-performance', { ...exampleInput('battery-performance'), cycle_count: 1.5, source: '' }],
    ['battery-prediction', { ...exampleInput('battery-prediction'), remaining_cycles: -Infinity }],
  ];
  for (const [kind, input] of bad) {
    const http = validateBody(kind, structuredClone(input), { maxClockSkewSeconds: 86_400, now: RECEIVED_AT });
    assert.equal(http.ok, false);
    const expected = http.ok ? [] : http.detail.map((entry) => ({ ...entry, loc: entry.loc.slice(1) }));
    const batch = batchOf(kind, [input]);
    assert.deepEqual(recordDetail(batch, 0), expected, JSON.stringify(input).slice(0, 80));
    assert.equal(recordProblem(batch, 0), expected.map((entry) => `${entry.loc.join('.')}: ${entry.msg}`).join('; '));
  }
  for (const kind of ALL_KINDS) assert.equal(recordProblem(batchOf(kind.name, [exampleInput(kind.name)]), 0), undefined);
});
