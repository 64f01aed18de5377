import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { KINDS, type KindName } from '../../src/records/kinds.js';
import { MAX_MEASUREMENT, MAX_TIMESTAMP, MIN_TIMESTAMP } from '../../src/records/schemas.js';
import type { FastifyInstance } from 'fastify';
import { buildApp, call } from '../support/helper.js';

const anyValue = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
  fc.string({ maxLength: 5 }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 2 }),
);

/** Around every bound the server draws: plausible time, the skew ahead of now, the largest measurement and integer. */
const edgeValue = fc.oneof(
  fc.double({ min: MIN_TIMESTAMP - 10, max: MIN_TIMESTAMP + 10 }),
  fc.double({ min: Date.now() / 1000 - 86_400, max: Date.now() / 1000 + 2 * 86_400, noNaN: true }),
  fc.constantFrom(MAX_TIMESTAMP, MAX_MEASUREMENT, -MAX_MEASUREMENT, 1.7e308, 2.9e27, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, -8.97e219),
);
const value = fc.oneof({ weight: 3, arbitrary: anyValue }, { weight: 2, arbitrary: edgeValue });

function bodies(kind: KindName) {
  const fields = Object.fromEntries(Object.keys(KINDS[kind].fields).map((field) => [field, value]));
  const record = fc.record(
    {
      ...fields,
      timestamp: value,
      source: fc.oneof(fc.string({ maxLength: 8 }), anyValue),
      battery_id: fc.oneof(fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/), fc.string({ maxLength: 4 }), anyValue),
      firmware: anyValue,
    },
    { requiredKeys: [] },
  );
  // Mostly valid-looking records, some arrays of them, some arbitrary JSON.
  return fc.oneof({ weight: 6, arbitrary: record }, { weight: 2, arbitrary: fc.array(record, { maxLength: 3 }) }, { weight: 1, arbitrary: fc.jsonValue() });
}

describe('any JSON body is stored exactly as validated or answered 422, never 500', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
  });
  after(() => app.close());

  for (const kind of ['battery-data', 'battery-performance'] as const) {
    it(kind, async () => {
      await fc.assert(
        fc.asyncProperty(bodies(kind), async (body) => {
          const sent = JSON.parse(JSON.stringify(body)) as unknown; // what travels: NaN and Infinity become null
          const before = Date.now() / 1000;
          const { status, body: answer } = await call(app, `/api/${kind}`, { body: JSON.stringify(body) });
          assert.ok(status === 200 || status === 422, `status ${status}: ${JSON.stringify(answer)}`);
          if (status === 422) {
            assert.ok(Array.isArray(answer.detail) && answer.detail.length > 0);
            return;
          }
          const inputs = (Array.isArray(sent) ? sent : [sent]) as Record<string, unknown>[];
          const ids: string[] = answer.ids ?? [answer.id];
          assert.equal(ids.length, inputs.length);
          for (const [index, input] of inputs.entries()) {
            const batteryId = (input.battery_id as string | undefined) ?? 'default';
            const stored = (await app.store.history(kind, { since: -Infinity, limit: 10_000, batteryId })).find((r) => r._id === ids[index]);
            assert.ok(stored, 'acknowledged record is stored');
            for (const field of Object.keys(KINDS[kind].fields)) {
              assert.equal(stored[field], input[field]);
              const number = stored[field] as number;
              // What is taken can be aggregated and read back as sent.
              if (KINDS[kind].fields[field]!.type === 'integer') assert.ok(Number.isSafeInteger(number), `${field} ${number}`);
              else assert.ok(Math.abs(number) <= MAX_MEASUREMENT, `${field} ${number}`);
            }
            // Plausible time: every time window can find it.
            const time = stored.timestamp as number;
            assert.ok(time >= MIN_TIMESTAMP && time <= Date.now() / 1000 + app.config.maxClockSkewSeconds, `timestamp ${time}`);
            assert.equal(stored.source, input.source ?? KINDS[kind].defaultSource);
            if (input.timestamp === undefined) assert.ok((stored.timestamp as number) >= before - 1);
            else assert.equal(stored.timestamp, input.timestamp);
            assert.equal('firmware' in stored, false);
          }
        }),
        { numRuns: 150 },
      );
    });
  }
});
