/**
 * The ingest sink, as `app.ingest`: HTTP POSTs and the TCP collector submit their records here
 * (batching, back-pressure, group commit), and `app.ingest.afterCommit` hands every stored batch to
 * its subscribers. Closed after the requests in flight, before the store: what was taken is written.
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
    const sink = new StoreSink(app.store, { logger: app.log });
    app.decorate('ingest', sink);
    app.addHook('onClose', () => sink.close());
  },
  { name: 'ingest', fastify: '5.x', dependencies: ['store'] },
);
