import { mongoForTests } from '../support/mongo-server.js';
import { webhookSuite } from './webhook-suite.js';

// The same webhook suite as on SQLite, records and alarms on a real MongoDB-wire server (see mongo-server.ts).
const { server, freshDatabase } = await mongoForTests('webhooks_test');

webhookSuite('mongodb', {
  fresh: () => ({ mongodbUri: server.uri, databaseName: freshDatabase() }),
});
