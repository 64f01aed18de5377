/**
 * `battery-monitor collect --api http://host:8000`: its flags, then the relay (relay/collect.ts)
 * until SIGINT or SIGTERM. Settings come from the environment the CLI read.
 */
import { collectDefaultMetrics } from 'prom-client';
import { createCollectorLogger } from '../collector/logger.js';
import { createCollectorMetrics } from '../collector/metrics.js';
import { ConfigError, loadConfig, type Config, type Environment } from '../config.js';
import { closeLogger } from '../logger.js';
import { startStandaloneCollector, type StandaloneCollector } from '../relay/collect.js';
import { parseFlags } from './flags.js';
import { runUntilSignalled } from './signals.js';

const DEFAULT_METRICS_PORT = 9464;

const HELP = `Usage: battery-monitor collect [options]

Runs the TCP collector on its own: binary frames on COLLECTOR_BINARY_PORT (23456), JSON messages on
COLLECTOR_JSON_PORT (23457). Records go into a disk spool (DATA_DIR/spool, at most SPOOL_MAX_BYTES)
and are forwarded in batches to the API's POST /api/{kind}; while the API is away they wait in the
spool and are delivered in order, once each, when it is back.

Options:
      --api URL           the API to forward to (default http://127.0.0.1:API_PORT)
      --metrics-port N    GET /metrics and /health on this port (default ${DEFAULT_METRICS_PORT}; 0: any free port)
      --metrics-host H    default COLLECTOR_HOST
  -h, --help              this text

Devices do not authenticate: on a network, set COLLECTOR_ALLOW to the networks of your devices
(a warning at start-up says when the listeners are reachable from other hosts without it). The API
must answer at --api itself: redirects are not followed (a 3xx is logged, the records wait). With
API_KEY set, use https:// to another host, or the key travels in clear (also warned at start-up).

Settings (environment or .env): COLLECTOR_HOST, COLLECTOR_BINARY_PORT, COLLECTOR_JSON_PORT,
COLLECTOR_BATTERY_MAP, COLLECTOR_ALLOW, COLLECTOR_MAX_CONNECTIONS, COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS,
COLLECTOR_FIRST_BYTE_TIMEOUT, COLLECTOR_IDLE_TIMEOUT, COLLECTOR_LOG_FILE, DATA_DIR, SPOOL_MAX_BYTES,
API_KEY (sent as X-API-Key), LOG_LEVEL.`;

export async function runCollectCommand(args: string[], env: Environment): Promise<void> {
  const values = parseFlags(
    args,
    {
      api: { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-host': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    HELP,
  );
  if (values === undefined) return;
  let config: Config;
  let apiUrl: string;
  let metricsPort: number;
  try {
    config = loadConfig(env);
    apiUrl = values.api ?? `http://127.0.0.1:${config.apiPort}`;
    const parsed = new URL(apiUrl);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(`--api must be an http:// or https:// URL, got "${apiUrl}"`);
    if (parsed.username !== '' || parsed.password !== '') throw new ConfigError('--api must not hold credentials; set API_KEY instead');
    const rawPort = values['metrics-port'] ?? String(DEFAULT_METRICS_PORT);
    metricsPort = Number(rawPort);
    if (!/^\d+$/.test(rawPort) || metricsPort > 65535) throw new ConfigError(`--metrics-port must be 0-65535, got "${rawPort}"`);
  } catch (error) {
    console.error(error instanceof TypeError ? `--api must be a URL like http://host:8000, got "${values.api}"` : (error as Error).message);
    process.exitCode = 2;
    return;
  }
  const logger = createCollectorLogger(config);
  const metrics = createCollectorMetrics();
  collectDefaultMetrics({ register: metrics.registry });
  await runUntilSignalled(
    async () => {
      let running: StandaloneCollector;
      try {
        running = await startStandaloneCollector(config, { apiUrl, metricsPort, metricsHost: values['metrics-host'], logger, metrics });
      } catch (error) {
        // What had started is closed; the CLI prints the one line (a ListenError names the setting).
        await closeLogger(logger);
        throw error;
      }
      return {
        close: async () => {
          await running.close();
          await closeLogger(logger);
        },
      };
    },
    () => ({ log: logger, message: 'stopping' }),
  );
}
