import { after } from 'node:test';
import { MongoClient } from 'mongodb';
import { startMongoServer } from '../support/mongo-server.js';
import { webhookSuite } from './webhook-suite.js';

// The same webhook suite as on SQLite, records and alarms on a real MongoDB-wire server (see mongo-server.ts).
const server = await startMongoServer();
const databases: string[] = [];
after(async () => {
  const admin = new MongoClient(server.uri);
  for (const name of databases) await admin.db(name).dropDatabase().catch(() => undefined);
  await admin.close();
  await server.stop();
});

webhookSuite('mongodb', {
  fresh: () => {
    const databaseName = `webhooks_test_${process.pid}_${databases.length + 1}`;
    databases.push(databaseName);
    return { mongodbUri: server.uri, databaseName };
  },
});
