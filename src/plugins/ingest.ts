/**
 * The ingest sink, as `app.ingest`: HTTP POSTs and the TCP collector submit their records here
 * (batching, back-pressure up to INGEST_MAX_PENDING_RECORDS, group commit; records the store refuses
 * counted in `app.metrics`), and `app.ingest.afterCommit` hands every stored batch to its subscribers. Closed after the requests in flight, before the store: what was taken is written.
 */
import fp from 'fastify-plugin';
import { StoreSink } from '../ingest/store-sink.js';

declare module 'fastify' {
  interface FastifyInstance {
    ingest: StoreSink;
  }
}

export const ingestPlugin = fp(
  async (app) => {
    const sink = new StoreSink(app.store, { logger: app.log, metrics: app.metrics, maxPendingRecords: app.config.ingestMaxPendingRecords });
    app.decorate('ingest', sink);
    app.addHook('onClose', () => sink.close());
  },
  { name: 'ingest', fastify: '5.x', dependencies: ['store', 'metrics'] },
);
