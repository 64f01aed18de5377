/**
 * The API's manual: the OpenAPI 3.1 document (@fastify/swagger, from every route's schemas) at
 * /openapi.json and Swagger UI at /docs, both reads (READ_API_KEY, when set, guards them).
 */
import type { SwaggerOptions } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Config } from '../config.js';
import { DOCS_CONTENT_SECURITY_POLICY } from '../http/security-headers.js';
import { requireKey } from './auth.js';
import { securityOf } from './common.js';

/** @fastify/swagger's options: the document's header; its paths come from the routes registered after it. */
export function openApiOptions(config: Pick<Config, 'apiKey' | 'readApiKey'>): SwaggerOptions {
  return {
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
  };
}

export const docsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const onRequest = requireKey(app.config, 'read');
  // Its pages get their own Content-Security-Policy in place of everyone's (security-headers.ts says why).
  await app.register(swaggerUi, { routePrefix: '/docs', uiHooks: { onRequest }, staticCSP: DOCS_CONTENT_SECURITY_POLICY });
  app.get('/openapi.json', { schema: { hide: true }, onRequest }, async () => app.swagger());
};
