/** GET /health: 200 while the store answers, 503 naming the store when it does not. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { securityOf } from './common.js';

const Health = Type.Object({
  status: Type.String({ example: 'healthy' }),
  database: Type.String({ example: 'connected' }),
  store: Type.String({ example: 'sqlite', description: 'sqlite or mongodb' }),
  mode: Type.Optional(Type.String({ example: 'wal', description: 'sqlite: wal; mongodb: timeseries or plain' })),
  error: Type.Optional(Type.String({ description: 'Why the store is unreachable' })),
  timestamp: Type.Number({ description: 'Server time, Unix seconds' }),
});

export const healthRoute: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/health',
    {
      schema: {
        operationId: 'health',
        summary: 'Is the store reachable?',
        tags: ['Health'],
        // Open whatever keys are set: load balancers and monitors ask it.
        security: securityOf(app.config, 'open'),
        response: { 200: Health, 503: Health },
      },
    },
    async (request, reply) => {
      const health = await app.store.health();
      const body = {
        status: health.ok ? 'healthy' : 'unhealthy',
        database: health.ok ? 'connected' : 'disconnected',
        store: health.store,
        mode: health.mode,
        error: health.error,
        timestamp: Date.now() / 1000,
      };
      return reply.code(health.ok ? 200 : 503).send(body);
    },
  );
};
