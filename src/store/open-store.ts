/** Chooses the store: MongoDB when MONGODB_URI is set, else the embedded SQLite file. */
import type { Config } from '../config.js';
import { openSqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

export async function openStore(config: Pick<Config, 'mongodbUri' | 'databaseName' | 'dataDir' | 'retentionDays'>): Promise<Store> {
  if (config.mongodbUri !== undefined) throw new Error('the MongoDB store is not built yet');
  return openSqliteStore(config.dataDir);
}
