/**
 * `battery-monitor collect --api http://host:8000`: the collector as its own process. TCP listeners
 * write into the disk spool (DATA_DIR/spool), the forwarder delivers the spool to the API, and a
 * small HTTP listener serves GET /metrics (Prometheus text) and GET /health.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import { listenOn } from '../listen-error.js';
import { collectorOptionsFromConfig, startCollector, type CollectorHandle } from '../collector/collector.js';
import type { CollectorLogger } from '../collector/logger.js';
import { createCollectorMetrics, type CollectorMetrics } from '../collector/metrics.js';
import { isLoopback } from '../collector/peer-address.js';
import { startForwarder, type ForwarderHandle } from './forwarder.js';
import { Spool } from './spool.js';

export interface StandaloneOptions {
  apiUrl: string;
  /** GET /metrics and /health; 0 picks a free port; undefined serves none. */
  metricsPort?: number;
  metricsHost?: string;
  logger: CollectorLogger;
  /** Default: counters of its own. */
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
  const metrics = options.metrics ?? createCollectorMetrics();
  warnIfKeyInClear(options.apiUrl, config.apiKey, logger);
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

/**
 * X-API-Key goes with every POST: over plain http to another host, anyone on the way can read it
 * (and then write to the API). Said once at start-up; the key itself is never logged.
 */
export function warnIfKeyInClear(apiUrl: string, apiKey: string | undefined, logger: CollectorLogger): void {
  if (apiKey === undefined) return;
  const url = new URL(apiUrl);
  if (url.protocol !== 'http:' || isLoopback(url.hostname)) return;
  logger.warn(
    { api: url.origin },
    `API_KEY travels in clear text: --api is plain http to ${url.host}, another host; use https:// (e.g. a TLS proxy in front of the API) or keep the link on a network you trust`,
  );
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
