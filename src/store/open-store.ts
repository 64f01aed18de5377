/** Chooses the store: MongoDB when MONGODB_URI is set, else the embedded SQLite file. */
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../config.js';
import { openMongoStore } from './mongodb-store.js';
import { openSqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

export async function openStore(
  config: Pick<Config, 'mongodbUri' | 'databaseName' | 'dataDir' | 'retentionDays'>,
  log: Pick<FastifyBaseLogger, 'info' | 'warn'>,
): Promise<Store> {
  const logger = { info: (message: string) => log.info(message), warn: (message: string) => log.warn(message) };
  if (config.mongodbUri === undefined) return openSqliteStore(config.dataDir, { logger });
  return openMongoStore({ uri: config.mongodbUri, databaseName: config.databaseName, retentionDays: config.retentionDays, logger });
}
