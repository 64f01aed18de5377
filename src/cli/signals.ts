/**
 * A long-running command until SIGINT or SIGTERM: `run` and `serve` (server.ts), `collect`. The
 * signals are listened for before starting: one during a slow start (a store far away) stops what
 * was started once it is; a second one does not wait. Exits 0 once closed, 1 when closing failed.
 */
import { constants } from 'node:os';

interface StopLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface Stopping {
  log: StopLog;
  /** The line logged when a signal arrives. */
  message: string;
}

export async function runUntilSignalled<T extends { close(): Promise<void> }>(start: () => Promise<T>, stopping: (running: T) => Stopping): Promise<void> {
  let running: T | undefined;
  let requested: NodeJS.Signals | undefined;
  let stopped = false;
  const stop = (signal: NodeJS.Signals) => {
    if (running === undefined) {
      if (requested !== undefined) process.exit(128 + (constants.signals[signal] ?? 0));
      requested = signal;
      return;
    }
    if (stopped) return;
    stopped = true;
    const { log, message } = stopping(running);
    log.info({ signal }, message);
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  running = await start();
  if (requested !== undefined) stop(requested);
}
