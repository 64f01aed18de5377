/**
 * /api/stream publishes what was stored: a POST retried with the same Idempotency-Key stores nothing
 * new and publishes nothing new; a retry that carries more records than the first try publishes only
 * those. Through the HTTP API and the SSE stream on a socket, on SQLite and on a MongoDB-wire server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { buildApp, call, listen } from '../support/helper.js';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';

interface StreamEvent {
  id: string;
  record: { _id: string; pack_voltage: number };
}

/** Reads SSE events from a stream until `last` says stop; answers them in order. */
async function readEvents(response: Response, last: (event: StreamEvent) => boolean): Promise<StreamEvent[]> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const events: StreamEvent[] = [];
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended after ${events.length} events`);
    text += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const lines = block.split('\n');
      const data = lines.find((line) => line.startsWith('data: '));
      const id = lines.find((line) => line.startsWith('id: '));
      // The greeting and keep-alives have no data; alarm events (event: alarm) have no record id.
      if (data === undefined || id === undefined) continue;
      const event = { id: id.slice(4), record: JSON.parse(data.slice(6)) };
      events.push(event);
      if (last(event)) return events;
    }
  }
}

function idempotentStream(name: string, settings: () => Promise<Partial<Config>>): void {
  describe(`live stream of idempotent POSTs on ${name}`, () => {
    let app: FastifyInstance;
    let url: string;
    before(async () => {
      app = await buildApp(await settings());
      url = await listen(app);
    });
    after(() => app.close());

    it('publishes a retried POST once, and of a longer retry only the records not stored before', async () => {
      const pack = 'idem-live';
      const controller = new AbortController();
      const response = await fetch(`${url}/api/stream?battery_id=${pack}`, { signal: controller.signal });
      try {
        const reading = (i: number) => ({ pack_voltage: 380 + i, pack_current: -12.5, cell_temp: 31.2, battery_id: pack });
        const headers = { 'idempotency-key': 'segment-42' };
        const first = await call(url, '/api/battery-data', { body: [1, 2, 3].map(reading), headers });
        const retry = await call(url, '/api/battery-data', { body: [1, 2, 3].map(reading), headers });
        const longer = await call(url, '/api/battery-data', { body: [1, 2, 3, 4].map(reading), headers });
        for (const answer of [first, retry, longer]) assert.equal(answer.status, 200);
        assert.deepEqual(retry.body.ids, first.body.ids);
        assert.deepEqual(longer.body.ids.slice(0, 3), first.body.ids);
        // Without a key: the marker after which nothing more of the above can arrive.
        const marker = await call(url, '/api/battery-data', { body: reading(99) });
        const events = await readEvents(response, (event) => event.id === marker.body.id);
        assert.deepEqual(
          events.map((event) => event.id),
          [...first.body.ids, longer.body.ids[3], marker.body.id],
        );
        assert.deepEqual(events.map((event) => event.record.pack_voltage), [381, 382, 383, 384, 479]);
        assert.ok(events.every((event) => event.record._id === event.id));
        assert.equal((await call(url, `/api/battery-data/history?battery_id=${pack}`)).body.length, 5);
      } finally {
        controller.abort();
      }
    });
  });
}

idempotentStream('sqlite', async () => ({ mongodbUri: undefined }));

let mongo: MongoTestServer | undefined;
after(() => mongo?.stop());
idempotentStream('mongodb', async () => {
  mongo = await startMongoServer();
  return { mongodbUri: mongo.uri, databaseName: `idem_stream_${process.pid}` };
});
