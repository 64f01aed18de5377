/**
 * The OpenAPI document the service serves at /openapi.json: valid for the version it declares,
 * checked by a maintained validator, and saying what the server does (schemathesis.test.ts then
 * holds the server to it request by request).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { KINDS, KIND_NAMES } from '../../src/records/kinds.js';
import { MAX_MEASUREMENT, MAX_TIMESTAMP, MIN_TIMESTAMP } from '../../src/records/schemas.js';
import { build, buildApp, call } from '../support/helper.js';

type Doc = Record<string, any>;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** The document of the app with the given keys. */
async function documentOf(t: TestContext, keys: Partial<Pick<Config, 'apiKey' | 'readApiKey'>> = {}): Promise<Doc> {
  const app = await build(t, keys);
  const headers: Record<string, string> = keys.readApiKey === undefined ? {} : { 'x-api-key': keys.readApiKey };
  const { status, body } = await call(app, '/openapi.json', { headers });
  assert.equal(status, 200);
  return body;
}

function* operations(doc: Doc): Generator<[string, string, Doc]> {
  for (const [path, item] of Object.entries<Doc>(doc.paths)) {
    for (const method of METHODS) if (item[method] !== undefined) yield [path, method, item[method]];
  }
}

/** Every Schema Object of the document: components, parameters, bodies, responses. */
function* schemas(doc: Doc): Generator<[string, unknown]> {
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) yield [`components.schemas.${name}`, schema];
  for (const [path, method, operation] of operations(doc)) {
    const where = `${method.toUpperCase()} ${path}`;
    for (const parameter of operation.parameters ?? []) yield [`${where} parameter ${parameter.name}`, parameter.schema];
    for (const [type, media] of Object.entries<Doc>(operation.requestBody?.content ?? {})) yield [`${where} body ${type}`, media.schema];
    for (const [status, response] of Object.entries<Doc>(operation.responses ?? {})) {
      for (const [type, media] of Object.entries<Doc>(response.content ?? {})) yield [`${where} ${status} ${type}`, media.schema];
    }
  }
}

describe('the OpenAPI document', () => {
  let doc: Doc;
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
    doc = (await call(app, '/openapi.json')).body;
  });
  after(() => app.close());

  it('is valid for the version it declares (3.1), by @seriousme/openapi-schema-validator', async () => {
    assert.match(doc.openapi, /^3\.1\.\d+$/);
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.equal(validator.version, '3.1');
    assert.deepEqual(result.errors ?? [], [], JSON.stringify(result.errors, null, 2));
    assert.equal(result.valid, true);
  });

  it('holds schemas that are valid JSON Schema 2020-12, the dialect of OpenAPI 3.1', () => {
    // The document validator takes any object as a Schema Object; the meta-schema checks keywords
    // (a numeric exclusiveMinimum is right here and was wrong in the 3.0 document).
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    let count = 0;
    for (const [where, schema] of schemas(doc)) {
      count++;
      assert.equal(ajv.validateSchema(schema as object), true, `${where}: ${ajv.errorsText(ajv.errors)}`);
    }
    assert.ok(count > 50, `${count} schemas checked`);
  });

  it('calls no parameter with a default required', () => {
    let defaults = 0;
    for (const [path, method, operation] of operations(doc)) {
      for (const parameter of operation.parameters ?? []) {
        if (parameter.schema?.default === undefined) continue;
        defaults++;
        assert.notEqual(parameter.required, true, `${method.toUpperCase()} ${path} ${parameter.name}`);
      }
    }
    assert.ok(defaults >= 12, 'hours, limit, buckets and format have defaults');
  });

  it('leaves request bodies open to unknown fields, which the server ignores', async () => {
    for (const kind of Object.values(KINDS)) {
      const input = doc.components.schemas[`${kind.title}Input`];
      assert.ok(input, `${kind.title}Input`);
      assert.notEqual(input.additionalProperties, false, kind.title);
      assert.match(input.description, /ignored/);
    }
    // The server: an unknown field is dropped, the record stored.
    const posted = await call(app, '/api/battery-data', { body: { pack_voltage: 1, pack_current: 2, cell_temp: 3, battery_id: 'open-pack', firmware: '1.2' } });
    assert.equal(posted.status, 200);
    assert.equal('firmware' in (await call(app, '/api/battery-data/latest?battery_id=open-pack')).body, false);
  });

  it('bounds numbers as the server does: plausible time, finite sums, safe integers', () => {
    for (const kind of Object.values(KINDS)) {
      const { properties } = doc.components.schemas[`${kind.title}Input`];
      assert.equal(properties.timestamp.minimum, MIN_TIMESTAMP);
      assert.equal(properties.timestamp.maximum, MAX_TIMESTAMP);
      assert.match(properties.timestamp.description, /MAX_CLOCK_SKEW_SECONDS/);
      for (const [name, field] of Object.entries(kind.fields)) {
        const schema = properties[name];
        if (field.type === 'integer') {
          assert.equal(schema.type, 'integer');
          assert.equal(schema.maximum, Number.MAX_SAFE_INTEGER, `${kind.title}.${name}`);
          assert.equal(schema.minimum, -Number.MAX_SAFE_INTEGER, `${kind.title}.${name}`);
        } else {
          assert.equal(schema.maximum, MAX_MEASUREMENT, `${kind.title}.${name}`);
          assert.equal(schema.minimum, -MAX_MEASUREMENT, `${kind.title}.${name}`);
        }
      }
    }
  });

  it('links each POST to the reads of the pack it wrote to', () => {
    const operationIds = new Set([...operations(doc)].map(([, , operation]) => operation.operationId));
    for (const kind of KIND_NAMES) {
      const links = doc.paths[`/api/${kind}`].post.responses['200'].links;
      assert.deepEqual(Object.keys(links).sort(), ['aggregate', 'export', 'history', 'latest']);
      for (const link of Object.values<Doc>(links)) {
        assert.ok(operationIds.has(link.operationId), link.operationId);
        assert.deepEqual(link.parameters, { battery_id: '$request.body#/battery_id' });
      }
    }
  });
});

describe('the OpenAPI document says where a key is needed, as the server asks for one', () => {
  const keyed = [{ apiKey: [] }, { bearer: [] }];
  /** The security that applies to an operation: its own, else the document's. */
  const securityOf = (doc: Doc, path: string, method: string) => doc.paths[path][method].security ?? doc.security ?? [];

  it('with no key set, nothing needs one', async (t) => {
    const doc = await documentOf(t);
    for (const [path, method] of operations(doc)) assert.deepEqual(securityOf(doc, path, method), [], `${method} ${path}`);
  });

  it('with API_KEY set, writes need it and reads do not', async (t) => {
    const doc = await documentOf(t, { apiKey: 'write-key-0123456789' });
    for (const kind of KIND_NAMES) {
      assert.deepEqual(securityOf(doc, `/api/${kind}`, 'post'), keyed, kind);
      for (const read of ['latest', 'history', 'aggregate', 'export']) assert.deepEqual(securityOf(doc, `/api/${kind}/${read}`, 'get'), [], `${kind}/${read}`);
    }
    for (const path of ['/health', '/metrics', '/api/batteries', '/api/dashboard', '/api/stream']) assert.deepEqual(securityOf(doc, path, 'get'), [], path);
  });

  it('with READ_API_KEY set too, reads need a key, /health and /metrics still do not', async (t) => {
    const doc = await documentOf(t, { apiKey: 'write-key-0123456789', readApiKey: 'read-key-0123456789' });
    assert.deepEqual(securityOf(doc, '/api/battery-data', 'post'), keyed);
    for (const path of ['/api/battery-data/latest', '/api/battery-performance/history', '/api/batteries', '/api/dashboard', '/api/stream']) {
      assert.deepEqual(securityOf(doc, path, 'get'), keyed, path);
    }
    for (const path of ['/health', '/metrics']) assert.deepEqual(securityOf(doc, path, 'get'), [], path);
  });
});
