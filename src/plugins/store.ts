/**
 * The store, as `app.store`: the SQLite file in DATA_DIR, or MongoDB when MONGODB_URI is set. Old
 * records are removed at start-up and hourly (RETENTION_DAYS). Closed last, once everything that
 * writes to it has finished.
 */
import fp from 'fastify-plugin';
import { openStore } from '../store/open-store.js';
import { startRetention } from '../store/retention.js';
import type { Store } from '../store/store.js';

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
  }
}

export const storePlugin = fp(
  async (app) => {
    const store = await openStore(app.config, app.log);
    app.decorate('store', store);
    const retention = startRetention(store, app.config.retentionDays, app.log);
    app.addHook('onClose', async () => {
      await retention.stop();
      await store.close();
    });
  },
  { name: 'store', fastify: '5.x', decorators: { fastify: ['config'] } },
);
