import { after } from 'node:test';
import { startMongoServer, type MongoTestServer } from '../support/mongo-server.js';
import { cellsSuite } from './cells-suite.js';

// The same suite as on SQLite, on a real MongoDB-wire server (see mongo-server.ts).
let server: MongoTestServer | undefined;
after(() => server?.stop());

cellsSuite('mongodb', async () => {
  server = await startMongoServer();
  return { mongodbUri: server.uri, databaseName: `cells_test_${process.pid}` };
});
