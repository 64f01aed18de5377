/**
 * MongoDB outage through the HTTP API: with the server stopped, POSTs answer 503 within a bound and
 * /health says the store is down, in generic words (the details, host and port among them, go to
 * the log); once it is back, writes succeed without restarting the service.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import pino from 'pino';
import { appServerOptions, batteryMonitor } from '../../src/app.js';
import { freePort } from '../support/free-port.js';
import { buildApp, call, testConfig } from '../support/helper.js';
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
    assert.equal(during.headers.get('retry-after'), '5', 'a client is told when to come back');
    assert.equal(typeof during.body.detail, 'string');
    assert.ok(took < BOUND_MS, `the POST took ${took} ms`);
    const health = await call(app!, '/health');
    assert.equal(health.status, 503);
    assert.equal(health.body.store, 'mongodb');
    assert.equal(health.body.database, 'disconnected');
    assert.equal(health.body.error, 'the store is unreachable');
    assert.doesNotMatch(JSON.stringify(health.body), /password|@/);
    const port = new URL(server.uri).port;
    if (port !== '') assert.ok(!JSON.stringify(health.body).includes(port), 'the open /health names no port of the store');

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

describe('/health with the MongoDB store down', () => {
  it('answers a generic reason and logs the details, without secrets, once per change', { timeout: 60_000 }, async (t) => {
    const port = await freePort();
    const lines: { level: number; msg: string; err?: string }[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string; err?: string });
        done();
      },
    });
    // Nothing listens on `port`: the store is down from the start.
    const config = testConfig({ mongodbUri: `mongodb://monitor:s3cret-pass@127.0.0.1:${port}/`, databaseName: `health_${process.pid}`, logLevel: 'info' });
    const loggerInstance: FastifyBaseLogger = pino({ level: 'info' }, stream);
    const app = Fastify({ ...appServerOptions(config), loggerInstance });
    t.after(() => app.close());
    await app.register(batteryMonitor, { config });
    await app.ready();

    const answers = [await call(app, '/health'), await call(app, '/health')];
    for (const health of answers) {
      assert.equal(health.status, 503);
      assert.deepEqual([health.body.status, health.body.database, health.body.store, health.body.error], ['unhealthy', 'disconnected', 'mongodb', 'the store is unreachable']);
      const text = JSON.stringify(health.body);
      for (const leak of [String(port), '127.0.0.1', 'mongodb://', 'monitor', 's3cret']) assert.ok(!text.includes(leak), `the answer names ${leak}: ${text}`);
    }
    const logged = lines.filter((line) => line.msg === 'health: the store is unreachable');
    assert.equal(logged.length, 1, 'logged once while the reason stays the same');
    assert.match(String(logged[0]!.err), new RegExp(`127\\.0\\.0\\.1:${port}`), 'the log has the details');
    assert.ok(lines.every((line) => !JSON.stringify(line).includes('s3cret')), 'no secret in the log');
  });
});
