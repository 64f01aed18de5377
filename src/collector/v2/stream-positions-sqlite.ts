/**
 * Stream positions of the embedded setup: DATA_DIR/v2-streams.sqlite, a file of its own on the side
 * stores' thread (store/sqlite-thread.ts), for the reasons the alarm store has them (sqlite-alarm-store.ts):
 * the records' file belongs to their writer thread, and a commit's sync stays off the event loop. A save
 * is one small transaction, at most one per second per stream.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { openSideFile, SqliteSideStore } from '../../store/sqlite-thread.js';
import { sequenceText, streamHex } from './stream-keys.js';
import type { StreamPosition, StreamPositions } from './stream-positions.js';

export const STREAM_POSITIONS_FILE_NAME = 'v2-streams.sqlite';

export function openSqliteStreamPositions(dataDir: string): SqliteStreamPositions {
  mkdirSync(dataDir, { recursive: true });
  return new SqliteStreamPositions(path.join(dataDir, STREAM_POSITIONS_FILE_NAME));
}

/** The positions as the service sees them: each call answered by the file's thread. */
export class SqliteStreamPositions extends SqliteSideStore<SqliteStreamsFile> implements StreamPositions {
  constructor(file: string) {
    super({ openCore }, import.meta.url, file, 'stream positions');
  }

  get = (batteryId: string, streamId: bigint) => this.thread.call('get', batteryId, streamId);
  save = async (positions: readonly StreamPosition[]) => {
    if (positions.length > 0) await this.thread.call('save', positions);
  };
}

/** The core the thread runs (sqlite-thread-host.ts). */
export const openCore = (file: string) => new SqliteStreamsFile(file);

/** The file itself, on its thread. */
class SqliteStreamsFile {
  readonly #db: Database.Database;
  readonly #get: Database.Statement;
  readonly #save: (positions: readonly StreamPosition[]) => void;

  constructor(file: string) {
    const db = openSideFile(file);
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

  get(batteryId: string, streamId: bigint): bigint {
    const saved = this.#get.get(batteryId, streamHex(streamId)) as string | undefined;
    return saved === undefined ? 0n : BigInt(saved);
  }

  save(positions: readonly StreamPosition[]): void {
    this.#save(positions);
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
