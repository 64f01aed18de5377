/**
 * SQLite mode is one process. Two services on one DATA_DIR would each keep their own pack counts,
 * alarm and analytics state and live feed, and write the same files from two writer threads. The
 * first to start holds an exclusive SQLite lock on DATA_DIR/instance.lock for as long as it runs (a
 * transaction it never ends); the operating system drops the lock when the process ends, however it
 * ends, so a crash leaves nothing to clean up. A second start fails at once, saying what to do.
 *
 * Written on SQLite's own locking: Node has no file lock (flock) of its own, and better-sqlite3 is
 * already here.
 */
import path from 'node:path';
import Database from 'better-sqlite3';

export const LOCK_FILE_NAME = 'instance.lock';

export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError';
}

/** Holds DATA_DIR for this process until `release`; throws DataDirInUseError while another holds it. */
export function lockDataDir(dataDir: string): { release(): void } {
  const db = new Database(path.join(dataDir, LOCK_FILE_NAME), { timeout: 0 });
  try {
    db.exec('BEGIN EXCLUSIVE');
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
    throw new DataDirInUseError(
      `DATA_DIR ${dataDir} is in use by another battery-monitor process: with SQLite the service is one process. ` +
        'Stop the other one, give this one its own DATA_DIR, or set MONGODB_URI to run several instances on one store.',
    );
  }
  return {
    release: () => {
      if (!db.open) return;
      db.exec('ROLLBACK');
      db.close();
    },
  };
}
