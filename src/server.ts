/**
 * The process: the logger, the Fastify instance with the app (app.ts) on it, the TCP collector
 * beside it (with the edge protocol v2 listener and its stream positions: only here, where an ack
 * can mean "durable in the store"), listening, and the signals that stop it. `startService` is
 * what the CLI, the socket tests (collector, relay, browser) and the benchmarks start; the settings
 * come from its caller (the CLI reads the environment), never from here.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { appServerOptions, batteryMonitor } from './app.js';
import { runUntilSignalled } from './cli/signals.js';
import { collectorOptionsFromConfig, startCollector, type CollectorHandle } from './collector/collector.js';
import { createCollectorLogger } from './collector/logger.js';
import { openStreamPositions, type StreamPositions } from './collector/v2/stream-positions.js';
import type { Config } from './config.js';
import { ListenError } from './listen-error.js';
import { closeLogger, createLogger, UNLOGGED, type Logger } from './logger.js';

export interface ServiceOptions {
  /** Start the TCP collector in the same process (default true). */
  collector?: boolean;
}

export interface Service {
  url: string;
  /** The app: its settings, store, ingest sink, live feed… as decorators (app.config, app.store…). */
  app: FastifyInstance;
  /** The in-process TCP collector, unless started with { collector: false }. */
  collector: CollectorHandle | undefined;
  close(): Promise<void>;
}

export async function startService(config: Config, options: ServiceOptions = {}): Promise<Service> {
  const logger = createLogger({ level: config.logLevel });
  const loggerInstance: FastifyBaseLogger = logger;
  const app = Fastify({ ...appServerOptions(config), loggerInstance });
  let collector: CollectorHandle | undefined;
  let collectorLogger: Logger | undefined;
  let streamPositions: StreamPositions | undefined;
  // Closes what was started, in reverse order, also when start-up fails midway: a taken port ends
  // the process with one line instead of a store, a socket or a log file left open.
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await collector?.close(); // stops taking frames, hands what it received to the ingest sink, saves the v2 positions
      await streamPositions?.close();
      await app.close(); // lets requests in flight finish, writes what was taken, closes the store
      await closeLogger(collectorLogger);
      await closeLogger(logger);
    })());

  try {
    await app.register(batteryMonitor, { config });
    await app.ready();
    warnOfOpenWrites(app.log, config);
    if (options.collector !== false) {
      collectorLogger = createCollectorLogger(config);
      // Logs one line per listener.
      streamPositions = openStreamPositions(config);
      collector = await startCollector({
        ...collectorOptionsFromConfig(config),
        v2: { port: config.collectorV2Port, positions: streamPositions },
        sink: app.ingest,
        metrics: app.metrics,
        logger: collectorLogger,
      });
    }
    const port = await listenApi(app, config);
    const host = config.apiHost === '0.0.0.0' || config.apiHost === '::' ? '127.0.0.1' : config.apiHost;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    app.log.info({ listener: 'api', host: config.apiHost, port, setting: 'API_PORT', store: app.store.name, url }, 'battery monitor API listening');
    return { url, app, collector, close };
  } catch (error) {
    await close().catch((closeError: unknown) => logger.error({ err: closeError }, 'error while closing after a failed start'));
    throw error;
  }
}

/**
 * READ_API_KEY without API_KEY protects the readings and leaves anyone who reaches the API free to
 * write them: most likely an oversight, so it is said at start-up. A warning, not a refusal: an
 * installation that takes writes only from a trusted network (the relay on the same host) is a
 * reasonable one, and refusing would stop a service that ran the day before an upgrade.
 */
function warnOfOpenWrites(log: FastifyBaseLogger, config: Pick<Config, 'apiKey' | 'readApiKey'>): void {
  if (config.readApiKey === undefined || config.apiKey !== undefined) return;
  log.warn(
    { settings: ['READ_API_KEY', 'API_KEY'] },
    'READ_API_KEY is set but API_KEY is not: reads need a key, writes (POST /api/...) are open to anyone who reaches the API; set API_KEY too',
  );
}

/** `run` and `serve`: the service until SIGINT or SIGTERM, which stop it once in-flight writes are done. */
export function runService(config: Config, options: ServiceOptions): Promise<void> {
  return runUntilSignalled(() => startService(config, options), (service) => ({ log: service.app.log, message: 'stopping: finishing in-flight writes' }));
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
