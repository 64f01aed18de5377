/**
 * The battery monitor as a Fastify plugin, apart from the process: server.ts makes the Fastify
 * instance (with `appServerOptions` and its logger), registers this, listens, and starts the TCP
 * collector beside it; the tests' build(t) registers it and answers through `inject`. Load order is
 * fixed: external plugins, then the app's services (named plugins that declare what they need),
 * then the routes.
 */
import type { Server } from 'node:http';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import { Ajv } from 'ajv';
import { LogController, type FastifyError, type FastifyHttpOptions, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { alarmRoutes } from './api/alarm-routes.js';
import { analyticsRoutes } from './api/analytics-routes.js';
import { AnalyticsUnavailableError } from './analytics/analytics-engine.js';
import { docsRoutes, openApiOptions } from './api/docs-routes.js';
import { trackRouteMethods } from './api/common.js';
import { fleetRoutes } from './api/fleet-routes.js';
import { healthRoute } from './api/health-route.js';
import { metricsRoute } from './api/metrics-route.js';
import { recordRoutes } from './api/record-routes.js';
import { sessionRoutes } from './api/session-routes.js';
import { streamRoute } from './api/stream-route.js';
import { webRoutes } from './api/web-routes.js';
import type { Config } from './config.js';
import { closeUnreadConnections, connectionOptions, type ConnectionSettings } from './http/connections.js';
import { useLimitedJsonParser } from './http/json-body.js';
import { addSecurityHeaders } from './http/security-headers.js';
import { IngestFullError } from './ingest/store-sink.js';
import { alarmsPlugin } from './plugins/alarms.js';
import { analyticsPlugin } from './plugins/analytics.js';
import { ingestPlugin } from './plugins/ingest.js';
import { liveFeedPlugin } from './plugins/live-feed.js';
import { metricsPlugin } from './plugins/metrics.js';
import { specsPlugin } from './plugins/specs.js';
import { storePlugin } from './plugins/store.js';
import { toDetail } from './records/validate.js';
import { MAX_BATCH_BYTES as RELAY_MAX_BATCH_BYTES } from './relay/spool.js';
import { StoreUnavailableError } from './store/store.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
  }
}

export interface AppOptions {
  config: Config;
}

/**
 * What 10,000 records of the largest kind need. A battery-performance record at its longest, as
 * compact JSON: 150 bytes of keys, quotes, colons, commas and braces, a source of 128 characters
 * (130 bytes), a battery_id of 64 (66), and 8 numbers of up to 24 characters each
 * (-1.7976931348623157e+308: 192): 538 bytes, so 10,000 of them are 5.4 MB, 6.1 MB indented by two
 * spaces (JSON.stringify(records, null, 2)). The standalone collector's spool POSTs batches of up to
 * its MAX_BATCH_BYTES (8 MiB), which must be taken whole; 64 KiB over that leaves room for its brackets.
 * Before it was 16 MiB.
 */
export const BODY_LIMIT = RELAY_MAX_BATCH_BYTES + 64 * 1024;

/** Options of the Fastify instance itself, which a plugin cannot set. */
export function appServerOptions(config: Pick<Config, 'logLevel'> & ConnectionSettings): FastifyHttpOptions<Server> {
  const verbose = config.logLevel === 'debug' || config.logLevel === 'trace';
  return {
    // One log line per request costs a third of the throughput on two cores; on at debug level.
    logController: new LogController({ disableRequestLogging: !verbose }),
    bodyLimit: BODY_LIMIT,
    ...connectionOptions(config),
    return503OnClosing: true,
    // Each plugin's start is bounded (Fastify's default is 10 s). The store, alarm and analytics
    // plugins each open MongoDB and read their state: against a far Atlas region, or FerretDB on a
    // busy CI machine, one took more than 10 s. A minute still ends a start that hangs.
    pluginTimeout: 60_000,
    // Unknown fields are ignored (records/schemas.ts), `__proto__` among them: removed at parsing
    // (no prototype is ever touched) instead of failing the whole body as malformed JSON.
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
  };
}

const LOCATION: Record<string, string> = { querystring: 'query', headers: 'header', params: 'path', body: 'body' };

async function batteryMonitorApp(app: FastifyInstance, { config }: AppOptions): Promise<void> {
  app.decorate('config', config);
  // Past it a new connection is closed as soon as it is accepted (connections.ts has the timeouts).
  app.server.maxConnections = config.apiMaxConnections;
  app.addHook('onSend', closeUnreadConnections);
  useLimitedJsonParser(app);
  addSecurityHeaders(app);

  // Before any route: the methods of each known path, for 405 answers (see the not-found handler).
  const allowedMethods = trackRouteMethods(app);

  // Bodies are validated in the handlers by the records' own validator (the TCP collector's too);
  // query strings and headers here, coerced from text, unknown query parameters refused (common.ts).
  const queryAjv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, removeAdditional: false, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? () => true : queryAjv.compile(schema)));

  // A known path asked with a method it does not serve is 405 with the methods it does (RFC 9110);
  // only a path no route serves is 404.
  const notServed = (request: FastifyRequest, reply: FastifyReply) => {
    const allowed = allowedMethods(request.url.split('?', 1)[0]!);
    if (allowed.length > 0) return reply.code(405).header('allow', allowed.join(', ')).send({ detail: 'Method Not Allowed' });
    return reply.code(404).send({ detail: 'Not Found' });
  };

  app.setErrorHandler((error: FastifyError, request, reply) => {
    // The not-found route parses bodies too (a QUERY without Content-Type fails there): what was
    // asked is still a path or method not served.
    if (request.is404) return notServed(request, reply);
    if (error.validation !== undefined) {
      const where = LOCATION[error.validationContext ?? 'body'] ?? 'body';
      return reply.code(422).send({ detail: toDetail(error.validation as never, [where]) });
    }
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || error instanceof SyntaxError) {
      return reply.code(422).send({ detail: [{ loc: ['body'], msg: `JSON decode error: ${error.message}`, type: 'value_error.jsondecode' }] });
    }
    if (error instanceof IngestFullError) {
      // Back-pressure: the client comes back later instead of the queue growing without bound.
      return reply.code(503).header('retry-after', String(error.retryAfterSeconds)).send({ detail: error.message });
    }
    if (error instanceof AnalyticsUnavailableError) return reply.code(503).header('retry-after', '5').send({ detail: error.message });
    if (error instanceof StoreUnavailableError) {
      request.log.warn({ err: error.message }, 'store unavailable');
      return reply.code(503).header('retry-after', '5').send({ detail: 'The store is unavailable; try again shortly' });
    }
    if (error.statusCode !== undefined && error.statusCode < 500) {
      return reply.code(error.statusCode).send({ detail: error.message });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ detail: 'Internal server error' });
  });
  app.setNotFoundHandler((request, reply) => notServed(request, reply));

  // External plugins. The document collects every route registered after it.
  await app.register(cors, { origin: config.corsOrigins.includes('*') ? true : config.corsOrigins, methods: ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS'] });
  await app.register(swagger, openApiOptions(config));

  // The app's services.
  await app.register(metricsPlugin);
  await app.register(storePlugin);
  await app.register(ingestPlugin);
  await app.register(liveFeedPlugin);
  await app.register(specsPlugin);
  await app.register(alarmsPlugin);
  await app.register(analyticsPlugin);

  // Routes. The session's cookie parsing first: it then serves them all (the session cookie reads with the key).
  await app.register(sessionRoutes);
  await app.register(docsRoutes);
  await app.register(healthRoute);
  await app.register(recordRoutes);
  await app.register(fleetRoutes);
  await app.register(alarmRoutes);
  await app.register(analyticsRoutes);
  await app.register(streamRoute);
  await app.register(metricsRoute);
  await app.register(webRoutes);
}

/** Not encapsulated: its decorators (app.store, app.ingest…), hooks and error handler are the instance's. */
export const batteryMonitor = fp(batteryMonitorApp, { name: 'battery-monitor', fastify: '5.x' });
