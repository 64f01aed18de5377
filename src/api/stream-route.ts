/** GET /api/stream: each stored record once, as it is stored, as Server-Sent Events. */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { KIND_NAMES } from '../records/kinds.js';
import { BatteryId, errorResponses, Query, securityOf } from './common.js';
import { requireKey } from './auth.js';

const KEEP_ALIVE_MS = 15_000;

export const streamRoute: FastifyPluginAsyncTypebox = async (app) => {
  // Streams never end by themselves: end them when the server closes, or closing would wait forever.
  const open = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const raw of open) raw.end();
  });
  app.get(
    '/api/stream',
    {
      onRequest: requireKey(app.config, 'read'),
      schema: {
        operationId: 'stream',
        security: securityOf(app.config, 'read'),
        summary: 'Live records as Server-Sent Events',
        description:
          'Each stored record once, as it is stored, from the HTTP API and the collector alike: `event: <kind>`, ' +
          '`id: <record id>`, `data: <record JSON>`. A comment every 15 s keeps proxies from closing the stream. ' +
          'A client that falls more than 4 MiB behind is disconnected; EventSource reconnects by itself.',
        tags: ['Live'],
        querystring: Query({
          battery_id: Type.Optional(BatteryId),
          kind: Type.Optional(Type.Union(KIND_NAMES.map((kind) => Type.Literal(kind)))),
        }),
        response: { 200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }, ...errorResponses },
      },
    },
    (request, reply) => {
      const raw = reply.raw;
      // Headers set by hooks (CORS) are kept: the stream is written to the socket directly.
      raw.writeHead(200, {
        ...(reply.getHeaders() as OutgoingHttpHeaders),
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      reply.hijack();
      raw.write('retry: 2000\n: connected\n\n');
      const unsubscribe = app.liveFeed.subscribe({
        batteryId: request.query.battery_id,
        kind: request.query.kind,
        write: (text) => {
          raw.write(text);
          return raw.writableLength;
        },
        drop: () => raw.destroy(),
      });
      const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      open.add(raw);
      raw.on('close', () => {
        open.delete(raw);
        clearInterval(keepAlive);
        unsubscribe();
      });
    },
  );
};
