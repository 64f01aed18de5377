/** The alarm system, as `app.alarms`: rules, evaluation after commit, persisted alarms (docs/alarms.md). */
import fp from 'fastify-plugin';

export const alarmsPlugin = fp(async () => {}, { name: 'alarms', fastify: '5.x', dependencies: ['store', 'ingest', 'specs', 'metrics'] });
