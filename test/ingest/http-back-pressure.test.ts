/**
 * HTTP producers get back-pressure too: while the ingest queue is full, a POST is answered 503 with
 * Retry-After at once (nothing of it stored), instead of the queue growing without bound; once it
 * has drained, POSTs are stored again. The app through `inject`, on a real SQLite store whose
 * writes are held back for the length of the test's "full" phase.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { batchOf, data } from '../store/conformance.js';
import { build, call } from '../support/helper.js';

test('a POST while the ingest queue is full answers 503 with Retry-After, and is stored once it has drained', { timeout: 60_000 }, async (t) => {
  const app = await build(t);
  const write = app.store.write.bind(app.store);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  app.store.write = async (batches) => {
    await held;
    return write(batches);
  };
  // Devices (the collector) fill the queue to its bound; their batches are taken whatever the fill.
  const device = new AbortController();
  const rows = Array.from({ length: 1000 }, (_, i) => data(1_732_700_000 + i, 'pack-device'));
  const submitted: Promise<unknown>[] = [];
  while (!app.ingest.full) submitted.push(app.ingest.submit(batchOf('battery-data', rows), { retryUntil: device.signal }));

  const reading = { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2, battery_id: 'pack-http' };
  const refused = await call(app, '/api/battery-data', { body: reading });
  assert.equal(refused.status, 503);
  assert.match(refused.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
  assert.match(refused.body.detail, /retry after/i);

  const drained = once(app.ingest, 'drained');
  release();
  await Promise.all([...submitted, drained]);
  const stored = await call(app, '/api/battery-data', { body: reading });
  assert.equal(stored.status, 200);
  const history = await call(app, '/api/battery-data/history?battery_id=pack-http');
  assert.equal(history.body.length, 1, 'the refused POST was not stored');
});

test('INGEST_MAX_PENDING_RECORDS sets the bound: at 1000 records pending, a POST answers 503 with Retry-After', { timeout: 60_000 }, async (t) => {
  const app = await build(t, { ingestMaxPendingRecords: 1000 });
  const write = app.store.write.bind(app.store);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  app.store.write = async (batches) => {
    await held;
    return write(batches);
  };
  const device = new AbortController();
  const rows = Array.from({ length: 1000 }, (_, i) => data(1_732_700_000 + i, 'pack-device'));
  const submitted = app.ingest.submit(batchOf('battery-data', rows), { retryUntil: device.signal });
  try {
    // The default bound (100,000) would take 99,000 more records (and the POST below would wait for the held write).
    assert.equal(app.ingest.full, true, 'full at the configured 1000');
    const refused = await call(app, '/api/battery-data', { body: { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2, battery_id: 'pack-http' } });
    assert.equal(refused.status, 503);
    assert.match(refused.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    assert.match(refused.body.detail, /over 1000/);
  } finally {
    release();
    await submitted;
  }
});
