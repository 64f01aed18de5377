/**
 * Stream positions of the embedded setup: DATA_DIR/v2-streams.sqlite, a file of its own on a
 * connection of this thread, for the reason the alarm store has one (sqlite-alarm-store.ts): the
 * records' file belongs to the writer thread. A save is one small transaction (well under a
 * millisecond), at most one per second per stream.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../../store/store.js';
import { streamHex } from './wire.js';
import { sequenceText, type StreamPosition, type StreamPositions } from './stream-positions.js';

export const STREAM_POSITIONS_FILE_NAME = 'v2-streams.sqlite';

export function openSqliteStreamPositions(dataDir: string): SqliteStreamPositions {
  mkdirSync(dataDir, { recursive: true });
  return new SqliteStreamPositions(path.join(dataDir, STREAM_POSITIONS_FILE_NAME));
}

export class SqliteStreamPositions implements StreamPositions {
  readonly name = 'sqlite';
  readonly file: string;
  readonly #db: Database.Database;
  readonly #get: Database.Statement;
  readonly #save: (positions: readonly StreamPosition[]) => void;

  constructor(file: string) {
    this.file = file;
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 1000');
    db.exec('CREATE TABLE IF NOT EXISTS v2_streams (battery_id TEXT NOT NULL, stream_id TEXT NOT NULL, sequence TEXT NOT NULL, PRIMARY KEY (battery_id, stream_id))');
    this.#db = db;
    this.#get = db.prepare('SELECT sequence FROM v2_streams WHERE battery_id = ? AND stream_id = ?').pluck();
    const put = db.prepare(
      'INSERT INTO v2_streams (battery_id, stream_id, sequence) VALUES (?, ?, ?) ON CONFLICT (battery_id, stream_id) DO UPDATE SET sequence = excluded.sequence WHERE excluded.sequence > sequence',
    );
    this.#save = db.transaction((positions: readonly StreamPosition[]) => {
      for (const p of positions) put.run(p.batteryId, streamHex(p.streamId), sequenceText(p.sequence));
    });
  }

  async get(batteryId: string, streamId: bigint): Promise<bigint> {
    const saved = this.#run(() => this.#get.get(batteryId, streamHex(streamId)) as string | undefined);
    return saved === undefined ? 0n : BigInt(saved);
  }

  async save(positions: readonly StreamPosition[]): Promise<void> {
    if (positions.length > 0) this.#run(() => this.#save(positions));
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }

  /** SQLite errors (a full disk, a file locked by another process) as an outage. */
  #run<T>(operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      if ((error as Error)?.name === 'SqliteError') throw new StoreUnavailableError(`stream positions ${this.file}: ${(error as Error).message}`);
      throw error;
    }
  }
}
