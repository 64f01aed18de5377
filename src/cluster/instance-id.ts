/**
 * This instance's name among several (leases, the feed's floors, /health): INSTANCE_ID, else host
 * name and process id, and a count after the first when one process runs several apps (the tests):
 * each app holds its own leases and floor.
 */
import { hostname } from 'node:os';
import type { Config } from '../config.js';

let apps = 0;

/** Called once per app (the store plugin), which keeps the answer as `app.instanceId`. */
export function newInstanceId(config: Pick<Config, 'instanceId'>): string {
  if (config.instanceId !== undefined) return config.instanceId;
  apps++;
  return apps === 1 ? `${hostname()}:${process.pid}` : `${hostname()}:${process.pid}:${apps}`;
}
