import { after } from 'node:test';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';
import { apiSuite } from './api-suite.js';

// The same HTTP API suite as on SQLite, on a real MongoDB-wire server (see mongo-server.ts).
let server: MongoTestServer | undefined;
after(() => server?.stop());

apiSuite('mongodb', async () => {
  server = await startMongoServer();
  return { mongodbUri: server.uri, databaseName: `api_test_${process.pid}` };
});
