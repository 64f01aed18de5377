/**
 * The service as one process: store, batching writer, live feed, HTTP API and (unless turned off)
 * the TCP collector. `startService` is what the CLI, the tests and the benchmarks all start.
 */
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp, createLogger } from './api/app.js';
import { collectorOptionsFromConfig, startCollector, type CollectorHandle } from './collector/collector.js';
import { createCollectorLogger } from './collector/logger.js';
import { createCollectorMetrics, renderMetrics } from './collector/metrics.js';
import { loadConfig, type Config } from './config.js';
import { BatchWriter } from './ingest/batch-writer.js';
import { LiveFeed } from './ingest/live-feed.js';
import { loadSpecs } from './specs.js';
import { startRetention } from './store/retention.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';

export interface ServiceOptions {
  /** Start the TCP collector in the same process (default true). */
  collector?: boolean;
}

export interface Service {
  url: string;
  config: Config;
  app: FastifyInstance;
  store: Store;
  writer: BatchWriter;
  liveFeed: LiveFeed;
  /** The in-process TCP collector, unless started with { collector: false }. */
  collector: CollectorHandle | undefined;
  close(): Promise<void>;
}

export async function startService(overrides: Partial<Config> = {}, options: ServiceOptions = {}): Promise<Service> {
  const config: Config = { ...loadConfig(), ...overrides };
  const specs = loadSpecs(config.batterySpecsFile);
  // Counters of this service only (tests run several services in one process).
  const registry = new Registry();
  const metrics = createCollectorMetrics(registry);
  const logger = createLogger(config.logLevel);
  const store = await openStore(config, logger);
  const writer = new BatchWriter(store);
  const liveFeed = new LiveFeed(writer);
  const app = await buildApp({ config, store, writer, liveFeed, specs, logger, metrics: () => renderMetrics(registry) });
  const retention = startRetention(store, config.retentionDays, app.log);
  let collector: CollectorHandle | undefined;
  if (options.collector !== false) {
    collector = await startCollector({
      ...collectorOptionsFromConfig(config),
      sink: writer,
      metrics,
      logger: createCollectorLogger(config),
    });
    app.log.info({ binary_port: collector.binaryPort, json_port: collector.jsonPort }, 'collector listening');
  }
  await app.listen({ host: config.apiHost, port: config.apiPort });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.apiPort;
  const host = config.apiHost === '0.0.0.0' || config.apiHost === '::' ? '127.0.0.1' : config.apiHost;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  app.log.info({ store: store.name, url }, 'battery monitor API listening');

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      retention.stop();
      await collector?.close(); // stops taking frames, hands what it received to the writer
      await app.close(); // stops taking requests, lets in-flight ones finish
      await writer.close(); // writes what was accepted
      liveFeed.close();
      await store.close();
    })());
  return { url, config, app, store, writer, liveFeed, collector, close };
}
