/**
 * GET /api/stream: each stored record once, as it is stored, as Server-Sent Events; on MongoDB every
 * instance's records (app.liveFeed reads the cluster feed, docs/deploy.md).
 *
 * A subscription holds a socket and a place in every commit's fan-out for as long as the client
 * likes, so they are counted: at most STREAM_MAX_SUBSCRIBERS in all (more answer 503) and
 * STREAM_MAX_SUBSCRIBERS_PER_ADDRESS from one client address (more answer 429), so that one client
 * cannot take every place. The open count, the refusals and the drops are in /metrics.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { subscribeAlarmEvents } from '../alarms/alarm-stream.js';
import { canonicalAddress } from '../collector/peer-address.js';
import { MAX_QUEUED_BYTES } from '../ingest/live-feed.js';
import { KIND_NAMES } from '../records/kinds.js';
import { BatteryId, ErrorDetail, errorResponses, Query, securityOf } from './common.js';
import { requireKey } from './auth.js';

/** A comment this often keeps proxies from closing a quiet stream. */
const KEEP_ALIVE_MS = 15_000;
/** Seconds a refused client is asked to wait: a place frees only when another client leaves. */
const RETRY_AFTER_SECONDS = 10;

export const streamRoute: FastifyPluginAsyncTypebox = async (app) => {
  const { config, metrics } = app;
  // The server closes a connection that moves no bytes for API_IDLE_TIMEOUT, a stream's too: its
  // comments come more often than that (the setting may be as short as a second).
  const keepAliveMs = Math.min(KEEP_ALIVE_MS, (config.apiIdleTimeoutSeconds * 1000) / 2);
  // Streams never end by themselves: end them when the server closes, or closing would wait forever.
  const open = new Set<ServerResponse>();
  const openByAddress = new Map<string, number>();
  app.addHook('preClose', async () => {
    for (const raw of open) raw.end();
  });
  app.get(
    '/api/stream',
    {
      onRequest: requireKey(config, 'read'),
      schema: {
        operationId: 'stream',
        security: securityOf(config, 'read'),
        summary: 'Live records as Server-Sent Events',
        description:
          'Each stored record once, as it is stored, from the HTTP API and the collector alike (with several instances ' +
          'on MongoDB, from every instance, a poll of CLUSTER_POLL_MS later): `event: <kind>`, ' +
          '`id: <record id>`, `data: <record JSON>`. A comment every 15 s (or half API_IDLE_TIMEOUT, if shorter) keeps ' +
          `proxies from closing the stream. A client still ${MAX_QUEUED_BYTES / 1024} KiB behind when new records come is ` +
          'disconnected; EventSource reconnects by itself. Subscriptions are limited in all (503) and per client address ' +
          `(429); both answer with a Retry-After header (${RETRY_AFTER_SECONDS} s). Each alarm change comes as ` +
          '`event: alarm`, data `{event, alarm}` (docs/alarms.md).',
        tags: ['Live'],
        querystring: Query({
          battery_id: Type.Optional(BatteryId),
          kind: Type.Optional(Type.Union(KIND_NAMES.map((kind) => Type.Literal(kind)))),
        }),
        response: {
          200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...errorResponses,
          429: { ...ErrorDetail, description: 'Too many subscriptions from this client address (STREAM_MAX_SUBSCRIBERS_PER_ADDRESS)' },
          503: { ...ErrorDetail, description: 'Too many subscriptions in all (STREAM_MAX_SUBSCRIBERS)' },
        },
      },
    },
    (request, reply) => {
      // Gone before it was answered: its close has come and gone, nothing would release its place.
      if (request.raw.socket.destroyed) {
        reply.hijack();
        return;
      }
      const address = canonicalAddress(request.ip ?? '');
      const fromAddress = openByAddress.get(address) ?? 0;
      if (fromAddress >= config.streamMaxSubscribersPerAddress) {
        metrics.streamRefused.inc({ reason: 'per_address' });
        const detail = `Too many live streams from this address (at most ${config.streamMaxSubscribersPerAddress}); close one first`;
        reply.code(429).header('retry-after', String(RETRY_AFTER_SECONDS)).send({ detail });
        return;
      }
      if (open.size >= config.streamMaxSubscribers) {
        metrics.streamRefused.inc({ reason: 'global' });
        reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS)).send({ detail: 'Too many live streams are open; try again later' });
        return;
      }

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
        write: (events) => {
          // One write to the socket for the whole commit; the buffers are shared, not copied.
          raw.cork();
          for (const chunk of events) raw.write(chunk);
          const queued = raw.writableLength;
          raw.uncork();
          return queued;
        },
        drop: () => raw.destroy(),
      });
      // On MongoDB every instance's alarm changes (each pack is evaluated on one of them), else this process's.
      const cluster = app.cluster;
      const alarmChanges = cluster === undefined ? app.alarms : { onChange: cluster.onAlarmChange.bind(cluster) };
      const stopAlarms = subscribeAlarmEvents(alarmChanges, {
        batteryId: request.query.battery_id,
        kind: request.query.kind,
        write: (text) => {
          raw.write(text);
          return raw.writableLength;
        },
        drop: () => raw.destroy(),
      });
      const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), keepAliveMs);
      open.add(raw);
      openByAddress.set(address, fromAddress + 1);
      metrics.streamSubscribers.set(open.size);
      raw.on('close', () => {
        open.delete(raw);
        const left = (openByAddress.get(address) ?? 1) - 1;
        if (left > 0) openByAddress.set(address, left);
        else openByAddress.delete(address);
        metrics.streamSubscribers.set(open.size);
        clearInterval(keepAlive);
        unsubscribe();
        stopAlarms();
      });
    },
  );
};
