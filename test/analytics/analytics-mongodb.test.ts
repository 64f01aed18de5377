import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MongoAnalyticsStore } from '../../src/analytics/mongodb-analytics-store.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { mongoForTests } from '../support/mongo-server.js';
import { analyticsStoreConformance } from './analytics-store-conformance.js';
import { analyticsSuite } from './analytics-suite.js';

// The same analytics suite as on SQLite, records and analytics state on a real MongoDB-wire server (see mongo-server.ts).
const { server, freshDatabase } = await mongoForTests('analytics_test');

analyticsSuite('mongodb', {
  fresh: () => ({ mongodbUri: server.uri, databaseName: freshDatabase() }),
});

analyticsStoreConformance(`mongodb on ${server.description}`, async () => {
  const databaseName = freshDatabase();
  const open = () => new MongoAnalyticsStore({ uri: server.uri, databaseName });
  return { store: open(), reopen: async () => open() };
});

describe('MongoDB analytics store specifics', () => {
  it('answers StoreUnavailableError, naming no credentials, when the server is away', async () => {
    const store = new MongoAnalyticsStore({ uri: 'mongodb://someone:s3cret-pass@127.0.0.1:1/', databaseName: 'x', serverSelectionTimeoutMs: 200 });
    try {
      await assert.rejects(store.load(), (error: Error) => error instanceof StoreUnavailableError && !error.message.includes('s3cret-pass'));
    } finally {
      await store.close();
    }
  });
});
