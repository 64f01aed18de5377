/**
 * An export shares the server with every other request (issue 15, item 6): on a real SQLite store
 * holding 200,000 rows (about 15 MB of CSV, far more than the kernel's socket buffers),
 *   - a client that reads nothing makes the server stop reading the store: it holds a bounded
 *     part of the range, not the range, and the whole export still arrives once the client reads;
 *   - while a fast client (another process, so that its reading never waits for the server's event
 *     loop) takes an export, /health is answered, again and again, before the export is done.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ServerResponse } from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import type { StoredRecord } from '../../src/records/kinds.js';
import { within } from '../collector/helpers.js';
import { buildApp, call, listen } from '../support/helper.js';

const ROWS = 200_000;
const EXPORT_PATH = '/api/battery-data/export?hours=24&format=csv';

describe('an export on a real SQLite store', () => {
  let app: FastifyInstance;
  let url: string;
  /** Rows the store handed to exports so far. */
  let pulled = 0;

  before(async () => {
    app = await buildApp();
    const now = Date.now() / 1000;
    for (let start = 0; start < ROWS; start += 50_000) {
      const batch = new RecordBatch('battery-data', 50_000);
      for (let i = start; i < start + 50_000; i++) {
        const reading = { battery_id: `pack-${i % 10}`, pack_voltage: 380 + (i % 40) / 4, pack_current: -12.5 + (i % 7), cell_temp: 25 + (i % 11) / 2 };
        batch.append({ ...reading, timestamp: now - 3600 + (i * 3000) / ROWS }, now);
      }
      const [outcome] = await app.store.write([batch]);
      assert.ok(outcome?.ok);
    }
    // Counts what the store yields: the real store, observed (the route calls this method of this object).
    const exportRange = app.store.exportRange.bind(app.store);
    app.store.exportRange = async function* (...args: Parameters<typeof exportRange>): AsyncIterable<StoredRecord> {
      for await (const record of exportRange(...args)) {
        pulled++;
        yield record;
      }
    };
    url = await listen(app);
  });
  after(() => app.close());

  /** The server's side of the next export request. */
  const nextExportResponse = () =>
    new Promise<ServerResponse>((resolve) => {
      const onRequest = (request: { url?: string }, response: ServerResponse) => {
        if (request.url !== EXPORT_PATH) return;
        app.server.off('request', onRequest);
        resolve(response);
      };
      app.server.on('request', onRequest);
    });

  it('stops reading the store for a client that reads nothing, and sends it everything once it reads', async () => {
    pulled = 0;
    const serverSide = nextExportResponse();
    const client = net.connect(Number(new URL(url).port), '127.0.0.1');
    client.pause();
    client.write(`GET ${EXPORT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const response = await within(serverSide, 'the export request reaches the server');
    const socket = response.socket!;
    // Until the server stops: no row pulled over ten checks in a row (bounded: 20 s at most).
    let still = 0;
    let seen = -1;
    for (let check = 0; check < 1000 && still < 10; check++) {
      await sleep(20);
      still = pulled === seen ? still + 1 : 0;
      seen = pulled;
    }
    assert.equal(still, 10, 'the export stopped pulling rows while the client read nothing');
    const stalledAt = { pulled, sent: socket.bytesWritten - socket.writableLength };
    assert.ok(pulled < ROWS / 2, `pulled ${pulled} of ${ROWS} rows for a client that read nothing`);

    const received: Buffer[] = [];
    client.on('data', (chunk: Buffer) => received.push(chunk));
    client.resume();
    await within(new Promise((resolve) => client.once('end', resolve)), 'the whole export, once the client reads');
    const text = Buffer.concat(received).toString('utf8');
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    assert.match(text, /^HTTP\/1\.1 200 /);
    // Chunked: count rows by their newline; the header line is one of them.
    const rows = body.split('\n').filter((line) => /^\d+,/.test(line)).length;
    assert.equal(rows, ROWS);
    // What the server held for this client while it stalled: rows pulled, as text, less what went to
    // the kernel (its socket buffers took a few MB). A chunk or two, however long the range.
    const bytesPerRow = body.length / ROWS;
    const held = stalledAt.pulled * bytesPerRow - stalledAt.sent;
    assert.ok(held < 384 * 1024, `the server held about ${Math.round(held / 1024)} KiB of the export for a client that read nothing`);
  });

  it('answers /health while a fast client takes a long export', async () => {
    const serverSide = nextExportResponse();
    // The fast client in its own process: its reads never wait for this process's event loop.
    const reader = spawn(
      process.execPath,
      ['-e', `require('node:http').get(process.argv[1], (r) => { let n = 0; r.on('data', (c) => (n += c.length)); r.on('end', () => console.log(n)); });`, url + EXPORT_PATH],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let output = '';
    reader.stdout!.on('data', (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => reader.once('exit', resolve));
    const response = await within(serverSide, 'the export request reaches the server');
    let done = false;
    response.once('close', () => (done = true));
    let answeredDuring = 0;
    // Bounded: the export ends, or 2,000 probes.
    for (let i = 0; i < 2000 && !done; i++) {
      const health = await call(url, '/health');
      assert.equal(health.status, 200);
      if (!done) answeredDuring++;
    }
    assert.equal(await within(exited, 'the reader ends'), 0);
    assert.ok(Number(output) > 10_000_000, `the reader got ${output.trim()} bytes`);
    assert.ok(answeredDuring >= 3, `/health answered ${answeredDuring} times while the export ran`);
  });
});
