/**
 * The service as one process: store, batching writer, live feed, HTTP API and (unless turned off)
 * the TCP collector. `startService` is what the CLI, the tests and the benchmarks all start.
 */
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp } from './api/app.js';
import { collectorOptionsFromConfig, startCollector, type CollectorHandle } from './collector/collector.js';
import { createCollectorLogger } from './collector/logger.js';
import { createCollectorMetrics, renderMetrics } from './collector/metrics.js';
import { loadConfig, type Config } from './config.js';
import { ListenError } from './listen-error.js';
import { closeLogger, createLogger, UNLOGGED, type Logger } from './logger.js';
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
  const logger = createLogger({ level: config.logLevel });
  // What is open so far: close() closes it in reverse order, also when start-up fails midway, so a
  // taken port ends the process with one line instead of a store, a socket or a log file left open.
  const parts: Partial<{ store: Store; writer: BatchWriter; liveFeed: LiveFeed; app: FastifyInstance; collector: CollectorHandle; collectorLogger: Logger; retention: { stop(): void } }> = {};
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      parts.retention?.stop();
      await parts.collector?.close(); // stops taking frames, hands what it received to the writer
      await parts.app?.close(); // stops taking requests, lets in-flight ones finish
      await parts.writer?.close(); // writes what was accepted
      parts.liveFeed?.close();
      await parts.store?.close();
      await closeLogger(parts.collectorLogger);
      await closeLogger(logger);
    })());

  try {
    const store = (parts.store = await openStore(config, logger));
    const writer = (parts.writer = new BatchWriter(store));
    const liveFeed = (parts.liveFeed = new LiveFeed(writer));
    const app = (parts.app = await buildApp({ config, store, writer, liveFeed, specs, logger, metrics: () => renderMetrics(registry) }));
    if (options.collector !== false) {
      parts.collectorLogger = createCollectorLogger(config);
      // Logs one line per listener.
      parts.collector = await startCollector({ ...collectorOptionsFromConfig(config), sink: writer, metrics, logger: parts.collectorLogger });
    }
    const port = await listenApi(app, config);
    const host = config.apiHost === '0.0.0.0' || config.apiHost === '::' ? '127.0.0.1' : config.apiHost;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    app.log.info({ listener: 'api', host: config.apiHost, port, setting: 'API_PORT', store: store.name, url }, 'battery monitor API listening');
    parts.retention = startRetention(store, config.retentionDays, app.log);
    return { url, config, app, store, writer, liveFeed, collector: parts.collector, close };
  } catch (error) {
    await close().catch((closeError: unknown) => logger.error({ err: closeError }, 'error while closing after a failed start'));
    throw error;
  }
}

/** Listens on API_HOST:API_PORT and answers the bound port; a port that cannot be had throws a ListenError. */
async function listenApi(app: FastifyInstance, config: Pick<Config, 'apiHost' | 'apiPort'>): Promise<number> {
  try {
    // Fastify logs a line per address of the machine: UNLOGGED drops them, the caller logs one.
    await app.listen({ host: config.apiHost, port: config.apiPort, listenTextResolver: () => UNLOGGED });
  } catch (error) {
    const errno = error as NodeJS.ErrnoException;
    if (typeof errno.syscall === 'string') throw new ListenError({ host: config.apiHost, port: config.apiPort, portSetting: 'API_PORT', hostSetting: 'API_HOST' }, errno);
    throw error;
  }
  const address = app.server.address();
  return typeof address === 'object' && address !== null ? address.port : config.apiPort;
}
