import { after } from 'node:test';
import { MongoClient } from 'mongodb';
import { startMongoServer } from '../support/mongo-server.js';
import { alarmSuite } from './alarm-suite.js';

// The same alarm suite as on SQLite, records and alarms on a real MongoDB-wire server (see mongo-server.ts).
const server = await startMongoServer();
const databases: string[] = [];
after(async () => {
  // On a server of the user's own (MONGODB_TEST_URI) nothing may be left behind.
  const admin = new MongoClient(server.uri);
  for (const name of databases) await admin.db(name).dropDatabase().catch(() => undefined);
  await admin.close();
  await server.stop();
});

alarmSuite('mongodb', {
  fresh: () => {
    const databaseName = `alarms_test_${process.pid}_${databases.length + 1}`;
    databases.push(databaseName);
    return { mongodbUri: server.uri, databaseName };
  },
});
