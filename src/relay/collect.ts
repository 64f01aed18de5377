/**
 * `battery-monitor collect --api http://host:8000`: the collector as its own process. TCP listeners
 * write into the disk spool (DATA_DIR/spool), the forwarder delivers the spool to the API, and a
 * small HTTP listener serves GET /metrics (Prometheus text) and GET /health.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parseFlags } from '../cli/flags.js';
import { collectDefaultMetrics, type Registry } from 'prom-client';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { listenOn } from '../listen-error.js';
import { closeLogger } from '../logger.js';
import { collectorOptionsFromConfig, startCollector, type CollectorHandle } from './collector.js';
import { startForwarder, type ForwarderHandle } from '../relay/forwarder.js';
import { createCollectorLogger, type CollectorLogger } from './logger.js';
import { collectorMetrics, type CollectorMetrics } from './metrics.js';
import { Spool } from '../relay/spool.js';

export const DEFAULT_METRICS_PORT = 9464;

export interface StandaloneOptions {
  apiUrl: string;
  /** GET /metrics and /health; 0 picks a free port; undefined serves none. */
  metricsPort?: number;
  metricsHost?: string;
  logger: CollectorLogger;
  /** Default: the process's counters (collectorRegistry). */
  metrics?: CollectorMetrics;
}

export interface StandaloneCollector {
  collector: CollectorHandle;
  spool: Spool;
  forwarder: ForwarderHandle;
  metrics: CollectorMetrics;
  /** Bound port of the metrics listener, when there is one. */
  metricsPort: number | undefined;
  close(): Promise<void>;
}

/** Starts spool, forwarder, TCP listeners and the metrics listener; `close()` stops them in order. */
export async function startStandaloneCollector(config: Config, options: StandaloneOptions): Promise<StandaloneCollector> {
  const { logger } = options;
  const metrics = options.metrics ?? collectorMetrics;
  const spool = await Spool.open(path.join(config.dataDir, 'spool'), { maxBytes: config.spoolMaxBytes, logger, metrics });
  const forwarder = startForwarder({ apiUrl: options.apiUrl, spool, apiKey: config.apiKey, logger, metrics });
  let collector: CollectorHandle | undefined;
  let server: http.Server | undefined;
  try {
    collector = await startCollector({ ...collectorOptionsFromConfig(config), sink: spool, logger, metrics });
    if (options.metricsPort !== undefined) {
      const hostSetting = options.metricsHost === undefined ? 'COLLECTOR_HOST' : '--metrics-host';
      server = await serveMetrics(metrics.registry, options.metricsHost ?? config.collectorHost, options.metricsPort, hostSetting);
      const address = server.address() as AddressInfo;
      logger.info({ listener: 'metrics', host: options.metricsHost ?? config.collectorHost, port: address.port, setting: '--metrics-port' }, 'metrics listening');
    }
  } catch (error) {
    await collector?.close();
    await forwarder.close(0);
    await spool.close();
    throw error;
  }
  const metricsPort = server === undefined ? undefined : (server.address() as AddressInfo).port;
  logger.info({ api: options.apiUrl, spool: spool.dir, spoolMaxBytes: config.spoolMaxBytes, metricsPort, waiting: spool.depth().records }, 'collector forwarding to the API through the spool');
  let closing: Promise<void> | undefined;
  return {
    collector,
    spool,
    forwarder,
    metrics,
    metricsPort,
    close: () =>
      (closing ??= (async () => {
        await collector.close(); // what was received goes into the spool
        await forwarder.close(); // requests in flight get a few seconds; the rest waits in the spool
        await spool.close();
        if (server !== undefined) await new Promise((resolve) => server.close(resolve));
        logger.info({ waiting: spool.depth().records }, 'collector stopped');
      })()),
  };
}

/** GET /metrics (Prometheus text) and GET /health on a small HTTP listener; a port that cannot be had throws a ListenError. */
export async function serveMetrics(registry: Registry, host: string, port: number, hostSetting = '--metrics-host'): Promise<http.Server> {
  const server = http.createServer((request, response) => {
    const url = (request.url ?? '/').split('?')[0];
    if (request.method === 'GET' && url === '/metrics') {
      registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: Error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(error.message),
      );
    } else if (request.method === 'GET' && url === '/health') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"healthy"}');
    } else {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"Not Found"}');
    }
  });
  await listenOn(server, { host, port, hostSetting, portSetting: '--metrics-port', portFix: 'pass --metrics-port a free port, or 0 for any' });
  return server;
}

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

Settings (environment or .env): COLLECTOR_HOST, COLLECTOR_BINARY_PORT, COLLECTOR_JSON_PORT,
COLLECTOR_BATTERY_MAP, COLLECTOR_MAX_CONNECTIONS, COLLECTOR_IDLE_TIMEOUT, COLLECTOR_LOG_FILE,
DATA_DIR, SPOOL_MAX_BYTES, API_KEY (sent as X-API-Key), LOG_LEVEL.`;

export async function runCollectCommand(args: string[]): Promise<void> {
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
    config = loadConfig();
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
  collectDefaultMetrics({ register: collectorMetrics.registry });
  let running: StandaloneCollector;
  try {
    running = await startStandaloneCollector(config, { apiUrl, metricsPort, metricsHost: values['metrics-host'], logger });
  } catch (error) {
    // What had started is closed; the CLI prints the one line (a ListenError names the setting).
    await closeLogger(logger);
    throw error;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      logger.info({ signal }, 'stopping');
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await running.close();
  await closeLogger(logger);
}
