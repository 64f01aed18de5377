/**
 * The HTTP app as a Fastify instance, apart from the process (server.ts listens, service.ts wires the
 * store, writer and collector). Load order: external plugins, then routes.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import cors from '@fastify/cors';
import fastifyStatic from '@fastify/static';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Ajv } from 'ajv';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { BatchWriter } from '../ingest/batch-writer.js';
import type { LiveFeed } from '../ingest/live-feed.js';
import { toDetail } from '../records/validate.js';
import type { BatterySpecs } from '../specs.js';
import { StoreUnavailableError, type Store } from '../store/store.js';
import { requireKey } from './auth.js';
import { securityOf, trackRouteMethods } from './common.js';
import { fleetRoutes } from './fleet-routes.js';
import { healthRoute } from './health-route.js';
import { recordRoutes } from './record-routes.js';
import { sessionRoutes } from './session-routes.js';
import { streamRoute } from './stream-route.js';

export interface AppDeps {
  config: Pick<Config, 'apiKey' | 'readApiKey' | 'corsOrigins' | 'logLevel' | 'maxClockSkewSeconds'>;
  logger: FastifyBaseLogger;
  store: Store;
  writer: BatchWriter;
  liveFeed: LiveFeed;
  specs: BatterySpecs;
  /** Prometheus text for GET /metrics. */
  metrics?: () => Promise<string>;
}

export const WEB_DIST = fileURLToPath(new URL('../../web/dist/', import.meta.url));
/** 10,000 records of the largest kind with room to spare. */
const BODY_LIMIT = 16 * 1024 * 1024;

const LOCATION: Record<string, string> = { querystring: 'query', headers: 'header', params: 'path', body: 'body' };

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config } = deps;
  const verbose = config.logLevel === 'debug' || config.logLevel === 'trace';
  const app = Fastify({
    loggerInstance: deps.logger,
    // One log line per request costs a third of the throughput on two cores; on at debug level.
    logController: new LogController({ disableRequestLogging: !verbose }),
    bodyLimit: BODY_LIMIT,
    return503OnClosing: true,
    // Unknown fields are ignored (records/schemas.ts), `__proto__` among them: removed at parsing
    // (no prototype is ever touched) instead of failing the whole body as malformed JSON.
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
  });

  // Before any route: the methods of each known path, for 405 answers (see the not-found handler).
  const allowedMethods = trackRouteMethods(app);

  // Bodies are validated in the handlers by the records' own validator (the TCP collector's too);
  // query strings and headers here, coerced from text, with unknown parameters refused so that
  // `?battery_id[$ne]=x` and friends answer 422 instead of being ignored.
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
    if (error instanceof StoreUnavailableError) {
      request.log.warn({ err: error.message }, 'store unavailable');
      return reply.code(503).send({ detail: 'The store is unavailable; try again shortly' });
    }
    if (error.statusCode !== undefined && error.statusCode < 500) {
      return reply.code(error.statusCode).send({ detail: error.message });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ detail: 'Internal server error' });
  });
  app.setNotFoundHandler((request, reply) => notServed(request, reply));

  await app.register(cors, { origin: config.corsOrigins.includes('*') ? true : config.corsOrigins, methods: ['GET', 'POST', 'OPTIONS'] });
  await app.register(swagger, {
    // Components take the schemas' own names (BatteryData, BatteryDataInput…) instead of def-N.
    refResolver: { buildLocalReference: (json, baseUri, fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    openapi: {
      // 3.1: its schemas are JSON Schema 2020-12, the dialect TypeBox and Ajv write (numeric
      // exclusiveMinimum and friends); in a 3.0 document they are invalid.
      openapi: '3.1.0',
      info: {
        title: 'Battery Monitoring API',
        version: '2.0.0',
        description:
          'Battery telemetry: store and serve pack readings, performance records and life predictions. ' +
          'Compatible with the original FastAPI service; adds fleets (battery_id), aggregation, export and live push.',
      },
      components: {
        securitySchemes: {
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
          bearer: { type: 'http', scheme: 'bearer' },
        },
      },
      // Reads by default; writes and open routes say their own (securityOf).
      security: securityOf(config, 'read'),
    },
  });
  const docsHook = requireKey(config, 'read');
  await app.register(swaggerUi, { routePrefix: '/docs', uiHooks: { onRequest: docsHook } });
  app.get('/openapi.json', { schema: { hide: true }, onRequest: docsHook }, async () => app.swagger());

  // Before the routes: its cookie parsing then serves them all (the session cookie reads with the key).
  await app.register(sessionRoutes, deps);
  await app.register(healthRoute, deps);
  await app.register(recordRoutes, deps);
  await app.register(fleetRoutes, deps);
  await app.register(streamRoute, deps);
  if (deps.metrics !== undefined) {
    const metrics = deps.metrics;
    const metricsSchema = {
      summary: 'Counters in Prometheus text format',
      tags: ['Health'],
      security: securityOf(config, 'open'),
      response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
    };
    app.get('/metrics', { schema: metricsSchema }, async (request, reply) =>
      reply.type('text/plain; version=0.0.4').send(await metrics()),
    );
  }
  if (existsSync(WEB_DIST)) {
    await app.register(fastifyStatic, { root: WEB_DIST, prefix: '/', wildcard: false });
  } else {
    app.get('/', { schema: { hide: true } }, async (request, reply) =>
      reply.type('text/html').send('<p>Battery Monitoring API. The dashboard is not built (<code>npm run build:web</code>). API docs: <a href="/docs">/docs</a>.</p>'),
    );
  }
  return app;
}
