/**
 * Where each v2 stream stands: (battery_id, stream_id) -> the highest sequence acknowledged to the
 * device, kept beside the records (SQLite file or MongoDB collection, like the alarm store) so that
 * the handshake after a restart answers where the device resumes. Saved after acks, at most once a
 * second per stream and when its connection closes: it may lag behind what is stored (a crash), and
 * then the device sends some frames again, which their idempotency keys drop. It never runs ahead:
 * only an acknowledged sequence, which is durable, is ever saved, and a lower one never replaces a
 * higher one.
 */
import type { Config } from '../../config.js';
import { MongoStreamPositions } from './stream-positions-mongodb.js';
import { openSqliteStreamPositions } from './stream-positions-sqlite.js';

export interface StreamPosition {
  batteryId: string;
  streamId: bigint;
  /** Highest acknowledged sequence. */
  sequence: bigint;
}

export interface StreamPositions {
  readonly name: 'sqlite' | 'mongodb';
  /** The saved position of a stream, 0n when it has none. Rejects with StoreUnavailableError while the store is away. */
  get(batteryId: string, streamId: bigint): Promise<bigint>;
  /** Saves positions; where one is lower than the saved one, the saved one stays. */
  save(positions: readonly StreamPosition[]): Promise<void>;
  close(): Promise<void>;
}

export interface StreamPositionsLogger {
  warn(message: string): void;
}

/** Beside the records: MongoDB when MONGODB_URI is set, else DATA_DIR/v2-streams.sqlite. */
export function openStreamPositions(config: Pick<Config, 'mongodbUri' | 'databaseName' | 'dataDir'>): StreamPositions {
  if (config.mongodbUri === undefined) return openSqliteStreamPositions(config.dataDir);
  return new MongoStreamPositions({ uri: config.mongodbUri, databaseName: config.databaseName });
}

export { sequenceText } from './stream-keys.js';
