/** Chooses the alarm store beside the records: MongoDB when MONGODB_URI is set, else DATA_DIR/alarms.sqlite. */
import type { Config } from '../config.js';
import type { AlarmStore } from './alarm-store.js';
import { MongoAlarmStore, type AlarmStoreLogger } from './mongodb-alarm-store.js';
import { openSqliteAlarmStore } from './sqlite-alarm-store.js';

export function openAlarmStore(config: Pick<Config, 'mongodbUri' | 'databaseName' | 'dataDir'>, logger?: AlarmStoreLogger): AlarmStore {
  if (config.mongodbUri === undefined) return openSqliteAlarmStore(config.dataDir);
  return new MongoAlarmStore({ uri: config.mongodbUri, databaseName: config.databaseName, ...(logger === undefined ? {} : { logger }) });
}
