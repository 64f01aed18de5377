import path from 'node:path';

/**
 * The settings of a standalone relay (`battery-monitor collect`) in the tests, as environment
 * variables: its own DATA_DIR, loopback listeners on free ports, its collector log inside DATA_DIR.
 * `loadConfig(relayEnv(…))` for one started in-process; as the environment of a child process as is.
 */
export function relayEnv(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: dataDir,
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_BINARY_PORT: '0',
    COLLECTOR_JSON_PORT: '0',
    COLLECTOR_LOG_FILE: path.join(dataDir, 'data_collector.log'),
    ...extra,
  };
}
