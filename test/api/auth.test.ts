import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp, call } from '../support/helper.js';
import { EXAMPLES } from './api-suite.js';

const WRITE_KEY = 'write-key-0123456789';
const READ_KEY = 'read-key-0123456789';

describe('API keys', () => {
  describe('API_KEY only', () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildApp({ apiKey: WRITE_KEY });
    });
    after(() => app.close());

    it('refuses writes without the key or with a wrong one, with a detail', async () => {
      const none = await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'] });
      assert.equal(none.status, 401);
      assert.match(none.body.detail, /API key required/);
      const wrong = await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'], headers: { 'x-api-key': 'nope' } });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.detail, 'Invalid API key');
      assert.equal((await call(app, '/api/battery-data/latest')).status, 404, 'nothing was stored');
    });

    it('takes the key in X-API-Key or as a Bearer token', async () => {
      assert.equal((await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'], headers: { 'x-api-key': WRITE_KEY } })).status, 200);
      assert.equal((await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'], headers: { authorization: `Bearer ${WRITE_KEY}` } })).status, 200);
    });

    it('leaves reads, /health and /docs open', async () => {
      assert.equal((await call(app, '/api/battery-data/latest')).status, 200);
      assert.equal((await call(app, '/health')).status, 200);
      assert.equal((await call(app, '/openapi.json')).status, 200);
    });
  });

  describe('API_KEY and READ_API_KEY', () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildApp({ apiKey: WRITE_KEY, readApiKey: READ_KEY });
    });
    after(() => app.close());

    it('needs a key for reads and docs, either key will do; /health stays open', async () => {
      assert.equal((await call(app, '/api/batteries')).status, 401);
      assert.equal((await call(app, '/openapi.json')).status, 401);
      assert.equal((await call(app, '/api/batteries', { headers: { 'x-api-key': READ_KEY } })).status, 200);
      assert.equal((await call(app, '/api/batteries', { headers: { 'x-api-key': WRITE_KEY } })).status, 200);
      assert.equal((await call(app, '/health')).status, 200);
    });

    it('does not let the read key write', async () => {
      const { status } = await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'], headers: { 'x-api-key': READ_KEY } });
      assert.equal(status, 401);
    });
  });
});
