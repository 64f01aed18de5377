/**
 * The app's Prometheus counters, as `app.metrics`, in a registry of its own: several apps in one
 * process (the tests) count apart. The in-process TCP collector counts into them; GET /metrics
 * serves them.
 */
import fp from 'fastify-plugin';
import { Registry } from 'prom-client';
import { createCollectorMetrics, type CollectorMetrics } from '../collector/metrics.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: CollectorMetrics;
  }
}

export const metricsPlugin = fp(
  async (app) => {
    app.decorate('metrics', createCollectorMetrics(new Registry()));
  },
  { name: 'metrics', fastify: '5.x' },
);
