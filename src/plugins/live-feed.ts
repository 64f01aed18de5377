/**
 * The live feed, as `app.liveFeed`: what each commit stored, for /api/stream's subscribers: on MongoDB
 * what every instance stored (the cluster feed), on SQLite what this process stored.
 */
import fp from 'fastify-plugin';
import { LiveFeed } from '../ingest/live-feed.js';

declare module 'fastify' {
  interface FastifyInstance {
    liveFeed: LiveFeed;
  }
}

export const liveFeedPlugin = fp(
  async (app) => {
    const liveFeed = new LiveFeed(app.cluster ?? app.ingest.afterCommit, { onDrop: () => app.metrics.streamDropped.inc() });
    app.decorate('liveFeed', liveFeed);
    app.addHook('onClose', async () => liveFeed.close());
  },
  { name: 'live-feed', fastify: '5.x', dependencies: ['store', 'ingest', 'metrics'] },
);
