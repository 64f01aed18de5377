/**
 * MongoDB outage through the HTTP API: with the server stopped, POSTs answer 503 within a bound and
 * /health says which store is down; once it is back, writes succeed without restarting the service.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp, call } from '../support/helper.js';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';
import { EXAMPLES } from './api-suite.js';

/** The store's per-operation bound (10 s) plus the HTTP round trip, with room. */
const BOUND_MS = 15_000;

describe('MongoDB outage through the API', { skip: process.env.MONGODB_TEST_URI ? 'an external server cannot be stopped by the test' : false }, () => {
  let server: MongoTestServer;
  let app: FastifyInstance | undefined;
  before(async () => {
    server = await startMongoServer();
    app = await buildApp({ mongodbUri: server.uri, databaseName: `fault_${process.pid}` });
  });
  after(async () => {
    await app?.close();
    await server?.stop();
  });

  it('answers 503 within the bound while the server is down, and recovers by itself', async () => {
    const record = { ...EXAMPLES['battery-data'], battery_id: 'outage-pack' };
    assert.equal((await call(app!, '/api/battery-data', { body: record })).status, 200);

    await server.suspend!();
    const began = Date.now();
    const during = await call(app!, '/api/battery-data', { body: { ...record, pack_voltage: 1 } });
    const took = Date.now() - began;
    assert.equal(during.status, 503);
    assert.equal(typeof during.body.detail, 'string');
    assert.ok(took < BOUND_MS, `the POST took ${took} ms`);
    const health = await call(app!, '/health');
    assert.equal(health.status, 503);
    assert.equal(health.body.store, 'mongodb');
    assert.equal(health.body.database, 'disconnected');
    assert.doesNotMatch(JSON.stringify(health.body), /password|@/);

    await server.resume!();
    let status = 0;
    for (let tries = 0; tries < 60 && status !== 200; tries++) {
      status = (await call(app!, '/api/battery-data', { body: { ...record, pack_voltage: 2 } })).status;
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.equal(status, 200, 'writes succeed again without a restart');
    assert.equal((await call(app!, '/health')).status, 200);
    const history = (await call(app!, '/api/battery-data/history?battery_id=outage-pack')).body as { pack_voltage: number }[];
    assert.deepEqual(history.map((r) => r.pack_voltage).filter((v) => v !== 2), [398.2], 'nothing refused during the outage was stored');
  });
});
