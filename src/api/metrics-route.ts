/** GET /metrics: the app's counters (app.metrics) in Prometheus text, open to scrapers whatever keys are set. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { securityOf } from './common.js';

export const metricsRoute: FastifyPluginAsyncTypebox = async (app) => {
  const { registry } = app.metrics;
  const schema = {
    summary: 'Counters in Prometheus text format',
    tags: ['Health'],
    security: securityOf(app.config, 'open'),
    response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
  };
  app.get('/metrics', { schema }, async (request, reply) => reply.type('text/plain; version=0.0.4').send(await registry.metrics()));
};
