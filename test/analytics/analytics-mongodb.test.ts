import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MongoClient } from 'mongodb';
import { MongoAnalyticsStore } from '../../src/analytics/mongodb-analytics-store.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import { startMongoServer } from '../support/mongo-server.js';
import { analyticsStoreConformance } from './analytics-store-conformance.js';
import { analyticsSuite } from './analytics-suite.js';

// The same analytics suite as on SQLite, records and analytics state on a real MongoDB-wire server (see mongo-server.ts).
const server = await startMongoServer();
const databases: string[] = [];
after(async () => {
  // On a server of the user's own (MONGODB_TEST_URI) nothing may be left behind.
  const admin = new MongoClient(server.uri);
  for (const name of databases) await admin.db(name).dropDatabase().catch(() => undefined);
  await admin.close();
  await server.stop();
});

analyticsSuite('mongodb', {
  fresh: () => {
    const databaseName = `analytics_test_${process.pid}_${databases.length + 1}`;
    databases.push(databaseName);
    return { mongodbUri: server.uri, databaseName };
  },
});

analyticsStoreConformance(`mongodb on ${server.description}`, async () => {
  const databaseName = `analytics_store_test_${process.pid}_${databases.length + 1}`;
  databases.push(databaseName);
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
