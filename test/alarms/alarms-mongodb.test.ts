import { mongoForTests } from '../support/mongo-server.js';
import { alarmSuite } from './alarm-suite.js';

// The same alarm suite as on SQLite, records and alarms on a real MongoDB-wire server (see mongo-server.ts).
const { server, freshDatabase } = await mongoForTests('alarms_test');

alarmSuite('mongodb', {
  fresh: () => ({ mongodbUri: server.uri, databaseName: freshDatabase() }),
});
