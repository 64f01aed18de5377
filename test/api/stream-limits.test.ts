/**
 * Live stream subscribers are bounded (issue 15, item 7), on real sockets and a real SQLite store:
 *   - STREAM_MAX_SUBSCRIBERS_PER_ADDRESS: one more from the same address answers 429, while another
 *     address (127.0.0.2: loopback is a /8) is still taken; STREAM_MAX_SUBSCRIBERS: one more in all
 *     answers 503; both with Retry-After and a {"detail"} body, counted by reason in /metrics, where
 *     the open count is too; a place is free again once its client leaves;
 *   - a subscriber that never reads is dropped once more than MAX_QUEUED_BYTES of earlier commits
 *     wait for it in the server (not megabytes later), and counted, while one that reads gets
 *     every event;
 *   - a quiet stream outlives an idle timeout of one second: its comments come sooner.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { MAX_QUEUED_BYTES } from '../../src/ingest/live-feed.js';
import { eventually, within } from '../collector/helpers.js';
import { buildApp, call, listen } from '../support/helper.js';

interface Stream {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** What came so far: the body of a refusal, the events of a stream. */
  text: string;
  closed: boolean;
  close(): void;
}

/** GET /api/stream from a given local address; resolves once the status is known (and a refusal's body read). */
function openStream(url: string, localAddress = '127.0.0.1', path = '/api/stream'): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const request = http.get(`${url}${path}`, { agent: false, localAddress }, (response) => {
      const stream: Stream = { status: response.statusCode!, headers: response.headers, text: '', closed: false, close: () => request.destroy() };
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (stream.text += chunk));
      response.on('close', () => (stream.closed = true));
      if (stream.status === 200) resolve(stream);
      else response.on('end', () => resolve(stream));
    });
    request.on('error', reject);
  });
}

async function metric(url: string, series: string): Promise<number> {
  const text = (await call<string>(url, '/metrics')).body;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

const reading = (i: number, battery_id = 'live-pack') => ({ battery_id, pack_voltage: 380 + (i % 40) / 4, pack_current: -12.5, cell_temp: 25 + (i % 11) / 2 });

describe('live stream subscriber caps', () => {
  let app: FastifyInstance;
  let url: string;
  const streams: Stream[] = [];
  before(async () => {
    app = await buildApp({ streamMaxSubscribers: 5, streamMaxSubscribersPerAddress: 3 });
    url = await listen(app);
  });
  after(async () => {
    for (const stream of streams) stream.close();
    await app.close();
  });

  it('answers 429 past the per-address cap and 503 past the global one, counts both and the open streams', async () => {
    for (let i = 0; i < 3; i++) streams.push(await openStream(url, '127.0.0.1'));
    assert.deepEqual(streams.map((s) => s.status), [200, 200, 200]);
    const overAddress = await openStream(url, '127.0.0.1');
    assert.equal(overAddress.status, 429);
    assert.equal(overAddress.headers['retry-after'], '10');
    assert.match(JSON.parse(overAddress.text).detail, /Too many live streams from this address \(at most 3\)/);
    assert.equal(await metric(url, 'stream_subscribers_refused_total{reason="per_address"}'), 1);
    assert.equal(await metric(url, 'stream_subscribers'), 3);

    // Another address has places of its own, up to the global cap.
    for (let i = 0; i < 2; i++) streams.push(await openStream(url, '127.0.0.2'));
    assert.deepEqual(streams.map((s) => s.status), [200, 200, 200, 200, 200]);
    const overAll = await openStream(url, '127.0.0.3');
    assert.equal(overAll.status, 503);
    assert.equal(overAll.headers['retry-after'], '10');
    assert.match(JSON.parse(overAll.text).detail, /Too many live streams/);
    assert.equal(await metric(url, 'stream_subscribers_refused_total{reason="global"}'), 1);
    assert.equal(await metric(url, 'stream_subscribers'), 5);

    // A client that leaves frees its place, in all and for its address.
    streams.shift()!.close();
    await eventually(async () => (await metric(url, 'stream_subscribers')) === 4, 'the gauge counts 4 open streams');
    const again = await openStream(url, '127.0.0.1');
    streams.push(again);
    assert.equal(again.status, 200);
    assert.equal(await metric(url, 'stream_subscribers'), 5);
    assert.equal(await metric(url, 'stream_subscribers_refused_total{reason="per_address"}'), 1);
  });
});

describe('a live stream subscriber that never reads', () => {
  let app: FastifyInstance;
  let url: string;
  before(async () => {
    app = await buildApp();
    url = await listen(app);
  });
  after(() => app.close());

  it('is dropped once its backlog passes the bound, and counted; a subscriber that reads gets everything', async () => {
    const reader = await openStream(url, '127.0.0.1', '/api/stream?battery_id=live-pack');
    // The server's side of the next stream, to see what it holds for the client.
    const serverSocket = new Promise<Socket>((resolve) => {
      const onRequest = (request: http.IncomingMessage, response: http.ServerResponse) => {
        if (request.url !== '/api/stream?battery_id=live-pack') return;
        app.server.off('request', onRequest);
        resolve(response.socket!);
      };
      app.server.on('request', onRequest);
    });
    // A raw socket that sends its request and reads nothing: the kernel's buffers fill, then the server's.
    const stuck = net.connect({ port: Number(new URL(url).port), host: '127.0.0.1', localAddress: '127.0.0.2' });
    stuck.pause();
    stuck.on('error', () => {});
    stuck.write('GET /api/stream?battery_id=live-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const socket = await within(serverSocket, 'the stuck stream reaches the server');
    await eventually(async () => (await metric(url, 'stream_subscribers')) === 2, 'both streams are open');

    let maxBacklog = 0;
    let posted = 0;
    // Commits of 1,000 records (about 260 KB of events) one after another, until the server drops
    // it (bounded: 400 MB of events at most).
    for (let post = 0; post < 1600 && !socket.destroyed; post++) {
      const body = Array.from({ length: 1000 }, (_, i) => reading(post * 1000 + i));
      assert.equal((await call(url, '/api/battery-data', { body })).status, 200);
      posted += 1000;
      if (!socket.destroyed) maxBacklog = Math.max(maxBacklog, socket.writableLength);
    }
    assert.ok(socket.destroyed, 'the server dropped the subscriber that never read');
    assert.equal(await metric(url, 'stream_subscribers_dropped_total'), 1);
    await eventually(async () => (await metric(url, 'stream_subscribers')) === 1, 'the gauge counts the reader only');
    // Dropped at the first commit that found more than the bound queued: at most the bound and one commit held.
    const commitBytes = 1000 * 300;
    assert.ok(maxBacklog <= MAX_QUEUED_BYTES + commitBytes, `the server queued ${maxBacklog} bytes for a client that read nothing`);

    await eventually(() => (reader.text.match(/\nid: /g)?.length ?? 0) === posted, `the reader gets all ${posted} events`);
    assert.equal(reader.closed, false);
    reader.close();
    stuck.destroy();
  });
});

describe('a quiet live stream with a one-second idle timeout', () => {
  let app: FastifyInstance;
  let url: string;
  before(async () => {
    app = await buildApp({ apiIdleTimeoutSeconds: 1 });
    url = await listen(app);
  });
  after(() => app.close());

  it('stays open: its keep-alive comments come more often than the timeout', async () => {
    const stream = await openStream(url);
    try {
      // Three comments at half the timeout: the connection has outlived it.
      await eventually(() => stream.closed || (stream.text.match(/: keep-alive\n\n/g)?.length ?? 0) >= 3, 'three keep-alive comments or the close');
      assert.equal(stream.closed, false, 'the stream was closed by the idle timeout');
    } finally {
      stream.close();
    }
  });
});
