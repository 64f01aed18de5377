/**
 * The scan that runs before a JSON body is parsed (src/http/json-body.ts): brackets and braces
 * inside strings do not count, escapes inside strings are followed, bodies shaped like records (and
 * their unknown fields, a little nested) pass, and a body too deep or with too many arrays and
 * objects is stopped at the first one past the limit. Through the app, such a body is a 422 JSON
 * decode error, and the bodies the API took before still parse as they did.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { JSON_LIMITS, jsonExcess, type JsonLimits } from '../../src/http/json-body.js';
import { MAX_BATCH_RECORDS } from '../../src/records/schemas.js';
import { buildApp, call } from '../support/helper.js';

const SMALL: JsonLimits = { maxDepth: 4, maxContainers: 10 };
const excess = (text: string, limits = SMALL) => jsonExcess(Buffer.from(text), limits);

describe('jsonExcess', () => {
  it('passes records, batches of records, and arrays inside them', () => {
    assert.equal(excess('{"pack_voltage": 398.2, "source": "bms"}'), undefined);
    assert.equal(excess('[{"pack_voltage": 398.2}, {"pack_voltage": 401}]'), undefined);
    assert.equal(excess('[{"cells": [3.91, 3.92]}, {"cells": [[1], [2]]}]'), undefined, 'four levels, seven containers');
    assert.equal(excess('1'), undefined);
    assert.equal(excess(''), undefined);
  });

  it('answers the first bracket or brace deeper than maxDepth', () => {
    assert.deepEqual(excess('[[[[[1]]]]]'), { limit: 'maxDepth', offset: 4 });
    assert.deepEqual(excess('{"a":{"b":{"c":{"d":{"e":1}}}}}'), { limit: 'maxDepth', offset: 20 });
    assert.deepEqual(excess('[{"a": [{"b": [1]}]}]'), { limit: 'maxDepth', offset: 14 });
    assert.equal(excess('[[[[[', { maxDepth: 5, maxContainers: 10 }), undefined, 'a limit of 5 takes five levels');
  });

  it('answers the first array or object past maxContainers, however shallow', () => {
    const text = `[${'[],'.repeat(20)}[]]`;
    assert.deepEqual(excess(text), { limit: 'maxContainers', offset: 1 + 9 * 3 });
    assert.equal(excess(`[${'{},'.repeat(8)}{}]`), undefined, 'ten containers');
  });

  it('does not count brackets and braces inside strings, escaped quotes included', () => {
    assert.equal(excess('["[[[[[[{{{{{{", 1]'), undefined);
    assert.equal(excess('{"[[[[[[": "]]]]]]"}'), undefined);
    assert.equal(excess('["a \\"[[[[[[ still inside", 1]'), undefined);
    assert.equal(excess('["\\u005b[[[[[[", 1]'), undefined);
  });

  it('ends a string at a quote after an escaped backslash', () => {
    const text = '["\\\\", [[[[1]]]]]';
    assert.deepEqual(excess(text), { limit: 'maxDepth', offset: text.indexOf('[[[[') + 3 });
  });

  it('counts multi-byte UTF-8 as plain string bytes', () => {
    assert.equal(excess('[{"source": "Zelle 🔋 ü [[[[[["}]'), undefined);
  });

  it("the service's limits take a full batch of records with per-cell arrays and a nested unknown field each", () => {
    const record = '{"pack_voltage": 1, "cells": [3.9, 3.91], "firmware": {"version": {"major": 1}}}';
    const batch = `[${Array.from({ length: MAX_BATCH_RECORDS }, () => record).join(',')}]`;
    assert.equal(jsonExcess(Buffer.from(batch)), undefined);
    assert.ok(JSON_LIMITS.maxDepth >= 4);
  });
});

describe('JSON bodies through the app', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
  });
  after(() => app.close());

  it('a body one level too deep is a 422 JSON decode error naming the limit', async () => {
    const depth = JSON_LIMITS.maxDepth;
    const answer = await call(app, '/api/battery-data', { body: `${'['.repeat(depth)}{"pack_voltage": 1}${']'.repeat(depth)}` });
    assert.equal(answer.status, 422);
    assert.deepEqual(answer.body, {
      detail: [
        {
          loc: ['body'],
          msg: `JSON decode error: arrays and objects nested deeper than ${depth} levels (at byte ${depth}); a body is a record or an array of records`,
          type: 'value_error.jsondecode',
        },
      ],
    });
  });

  it('a body with too many arrays and objects is a 422 JSON decode error naming the limit', async () => {
    const { maxContainers } = JSON_LIMITS;
    const answer = await call(app, '/api/battery-data', { body: `[${'[],'.repeat(maxContainers)}[]]` });
    assert.equal(answer.status, 422);
    assert.deepEqual(answer.body.detail, [
      {
        loc: ['body'],
        msg: `JSON decode error: more than ${maxContainers} arrays and objects (at byte ${1 + (maxContainers - 1) * 3}); a body is a record or an array of up to ${MAX_BATCH_RECORDS} records`,
        type: 'value_error.jsondecode',
      },
    ]);
  });

  it('a record with a nested unknown field within the limits is stored, the field ignored', async () => {
    const answer = await call(app, '/api/battery-data', {
      body: '[{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3, "extra": {"cells": [[1]], "firmware": {"version": {"major": 1}}}}]',
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });

  it('malformed and empty bodies fail as before', async () => {
    const malformed = await call(app, '/api/battery-data', { body: '{"pack_voltage": ' });
    assert.equal(malformed.status, 422);
    assert.equal(malformed.body.detail[0].type, 'value_error.jsondecode');
    const empty = await call(app, '/api/battery-data', { body: '', headers: { 'content-type': 'application/json' } });
    assert.equal(empty.status, 422);
    assert.equal(empty.body.detail[0].type, 'value_error.jsondecode');
  });

  it('a UTF-8 byte order mark and non-ASCII strings still parse', async () => {
    const answer = await call(app, '/api/battery-data', { body: '\uFEFF{"pack_voltage": 1, "pack_current": 2, "cell_temp": 3, "source": "Zelle ü 🔋"}' });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const latest = await call(app, '/api/battery-data/latest');
    assert.equal(latest.body.source, 'Zelle ü 🔋');
  });
});
