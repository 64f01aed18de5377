/**
 * GET /health: 200 while the store answers, 503 when it does not. Open to anyone (load balancers),
 * so a failure is answered in generic words: the store's own reason (which for MongoDB names the
 * host and port) goes to the log, once each time it changes. It names the instance and how its live
 * stream hears of other instances' records (docs/deploy.md).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { securityOf } from './common.js';

const UNREACHABLE = 'the store is unreachable';

const Health = Type.Object({
  status: Type.String({ example: 'healthy' }),
  database: Type.String({ example: 'connected' }),
  store: Type.String({ example: 'sqlite', description: 'sqlite or mongodb' }),
  mode: Type.Optional(Type.String({ example: 'wal', description: 'sqlite: wal; mongodb: timeseries or plain' })),
  error: Type.Optional(Type.String({ example: UNREACHABLE, description: 'When the store does not answer; the details are in the service log' })),
  instance: Type.String({ example: 'api-1', description: 'This instance (INSTANCE_ID, else host name and process id)' }),
  feed: Type.String({
    example: 'poll',
    description: "How /api/stream gets other instances' records: local (SQLite: one process), poll (MongoDB: read by write position every CLUSTER_POLL_MS)",
  }),
  change_streams: Type.Optional(Type.Boolean({ description: 'MongoDB: whether the server offers change streams (detected at start; not used yet)' })),
  timestamp: Type.Number({ description: 'Server time, Unix seconds' }),
});

export const healthRoute: FastifyPluginAsyncTypebox = async (app) => {
  /** The store's last reason logged; undefined while it answers. */
  let logged: string | undefined;
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
    async (_request, reply) => {
      const health = await app.store.health();
      const reason = health.error ?? UNREACHABLE;
      if (!health.ok && reason !== logged) {
        logged = reason;
        app.log.warn({ store: health.store, err: reason }, 'health: the store is unreachable');
      } else if (health.ok && logged !== undefined) {
        logged = undefined;
        app.log.info({ store: health.store }, 'health: the store answers again');
      }
      const body = {
        status: health.ok ? 'healthy' : 'unhealthy',
        database: health.ok ? 'connected' : 'disconnected',
        store: health.store,
        mode: health.mode,
        error: health.ok ? undefined : UNREACHABLE,
        instance: app.instanceId,
        feed: app.cluster === undefined ? 'local' : app.cluster.status.mode,
        change_streams: app.cluster?.status.changeStreams,
        timestamp: Date.now() / 1000,
      };
      return reply.code(health.ok ? 200 : 503).send(body);
    },
  );
};
