/** Chooses the analytics store beside the records: MongoDB when MONGODB_URI is set, else DATA_DIR/analytics.sqlite. */
import type { Config } from '../config.js';
import type { AnalyticsStore } from './analytics-store.js';
import { MongoAnalyticsStore, type AnalyticsStoreLogger } from './mongodb-analytics-store.js';
import { openSqliteAnalyticsStore } from './sqlite-analytics-store.js';

export function openAnalyticsStore(config: Pick<Config, 'mongodbUri' | 'databaseName' | 'dataDir'>, logger?: AnalyticsStoreLogger): AnalyticsStore {
  if (config.mongodbUri === undefined) return openSqliteAnalyticsStore(config.dataDir);
  return new MongoAnalyticsStore({ uri: config.mongodbUri, databaseName: config.databaseName, ...(logger === undefined ? {} : { logger }) });
}
