/**
 * The TCP collector: a binary listener (16-byte frames, port 23456), a JSON listener (port 23457),
 * and one more binary listener per `port:` rule of the battery map. It accepts connections (up to
 * a limit, closing those silent too long), and each connection (connection.ts) decodes what it reads
 * into record batches that go to a sink (submitter.ts): the ingest sink in the all-in-one process,
 * the disk spool in the standalone relay. Batching across producers, retrying and back-pressure are
 * the sink's; when it is full, every socket is paused, so TCP flow control pushes back to the
 * devices instead of memory filling up here.
 *
 * `startCollector` starts the listeners and answers a handle with `close()`, so tests start it on
 * port 0 and read the bound ports from the handle. Decoding runs on this thread; the SQLite writes
 * run on the store's writer thread, the spool's writes in libuv's pool.
 */
import net from 'node:net';
import type { Config } from '../config.js';
import type { RecordSink } from '../ingest/record-sink.js';
import { listenOn } from '../listen-error.js';
import { DEFAULT_CLOCK_BOUND, type ClockBound } from '../records/validate.js';
import { batteryIdFor, parseBatteryMap, type BatteryMap } from './battery-map.js';
import { Connection } from './connection.js';
import { listenerCounters, type ListenerCounters } from './listener-counters.js';
import { LogEvery } from './log-every.js';
import { silentLogger, type CollectorLogger } from './logger.js';
import { createCollectorMetrics, type CollectorMetrics, type ListenerName } from './metrics.js';
import { Submitter } from './submitter.js';

export interface CollectorOptions {
  host: string;
  binaryPort: number;
  jsonPort: number;
  sink: RecordSink;
  /** COLLECTOR_BATTERY_MAP text or a parsed map. */
  batteryMap?: string | BatteryMap;
  /** Over this many open connections (all listeners together) new ones are refused. */
  maxConnections?: number;
  /** A connection silent this long is closed; 0 never. */
  idleTimeoutMs?: number;
  logger?: CollectorLogger;
  metrics?: CollectorMetrics;
  /** JSON records more than this far ahead of the server clock are rejected (MAX_CLOCK_SKEW_SECONDS). */
  maxClockSkewSeconds?: number;
}

/** Options from the settings: COLLECTOR_HOST, ports, battery map, limits. */
export function collectorOptionsFromConfig(
  config: Pick<Config, 'collectorHost' | 'collectorBinaryPort' | 'collectorJsonPort' | 'collectorBatteryMap' | 'collectorMaxConnections' | 'collectorIdleTimeoutSeconds' | 'maxClockSkewSeconds'>,
): Omit<CollectorOptions, 'sink'> {
  return {
    host: config.collectorHost,
    binaryPort: config.collectorBinaryPort,
    jsonPort: config.collectorJsonPort,
    batteryMap: config.collectorBatteryMap,
    maxConnections: config.collectorMaxConnections,
    idleTimeoutMs: config.collectorIdleTimeoutSeconds * 1000,
    maxClockSkewSeconds: config.maxClockSkewSeconds,
  };
}

export interface CollectorHandle {
  readonly host: string;
  readonly binaryPort: number;
  readonly jsonPort: number;
  /** Extra binary listeners from `port:` rules of the battery map. */
  readonly mappedPorts: readonly number[];
  readonly metrics: CollectorMetrics;
  readonly openConnections: number;
  /** True while reading is paused for back-pressure. */
  readonly paused: boolean;
  /** Resolves once every record received so far is durable in the sink (or counted as dropped). */
  drain(): Promise<void>;
  /** Stops listening, closes connections, hands over what was received, and waits for it. */
  close(): Promise<void>;
}

export async function startCollector(options: CollectorOptions): Promise<CollectorHandle> {
  const collector = new Collector(options);
  try {
    await collector.listen();
  } catch (error) {
    await collector.close();
    throw error;
  }
  return collector;
}

class Collector implements CollectorHandle {
  readonly host: string;
  binaryPort = 0;
  jsonPort = 0;
  mappedPorts: number[] = [];
  readonly metrics: CollectorMetrics;
  readonly #options: CollectorOptions;
  readonly #clock: ClockBound;
  readonly #log: CollectorLogger;
  readonly #map: BatteryMap;
  readonly #maxConnections: number;
  readonly #idleTimeoutMs: number;
  readonly #counters: Record<ListenerName, ListenerCounters>;
  readonly #submitter: Submitter;
  readonly #servers: net.Server[] = [];
  readonly #connections = new Set<Connection>();
  readonly #refusals = new LogEvery(10_000);
  #idleTimer: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(options: CollectorOptions) {
    this.#options = options;
    this.#clock = { maxClockSkewSeconds: options.maxClockSkewSeconds ?? DEFAULT_CLOCK_BOUND.maxClockSkewSeconds };
    this.host = options.host;
    this.#log = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? createCollectorMetrics();
    this.#map = typeof options.batteryMap === 'string' ? parseBatteryMap(options.batteryMap) : (options.batteryMap ?? parseBatteryMap(''));
    this.#maxConnections = options.maxConnections ?? 2000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
    this.#counters = { binary: listenerCounters(this.metrics, 'binary'), json: listenerCounters(this.metrics, 'json') };
    this.#submitter = new Submitter({
      sink: options.sink,
      counters: this.#counters,
      metrics: this.metrics,
      log: this.#log,
      pause: () => {
        for (const conn of this.#connections) conn.socket.pause();
      },
      resume: () => {
        const now = Date.now();
        for (const conn of this.#connections) {
          // Time spent paused by us is not the device's silence.
          conn.lastActivity = now;
          if (!this.#closing) conn.socket.resume();
        }
      },
    });
  }

  get openConnections(): number {
    return this.#connections.size;
  }

  get paused(): boolean {
    return this.#submitter.paused;
  }

  /** One "collector listening" line per listener; a port that cannot be had throws a ListenError naming its setting. */
  async listen(): Promise<void> {
    this.binaryPort = await this.#listen('binary', this.#options.binaryPort, 'COLLECTOR_BINARY_PORT');
    this.jsonPort = await this.#listen('json', this.#options.jsonPort, 'COLLECTOR_JSON_PORT');
    for (const [port, batteryId] of this.#map.byPort) {
      if (port === this.binaryPort || port === this.jsonPort) continue;
      this.mappedPorts.push(await this.#listen('binary', port, 'COLLECTOR_BATTERY_MAP', { rule: `port:${port}=${batteryId}`, battery_id: batteryId }));
    }
    if (this.#idleTimeoutMs > 0) {
      const every = Math.min(1000, Math.max(20, Math.floor(this.#idleTimeoutMs / 4)));
      this.#idleTimer = setInterval(() => this.#closeIdle(), every).unref();
    }
  }

  async #listen(listener: ListenerName, port: number, setting: string, rule?: { rule: string; battery_id: string }): Promise<number> {
    const server = net.createServer({ keepAlive: true, keepAliveInitialDelay: 60_000 }, (socket) => this.#accept(listener, socket));
    this.#servers.push(server);
    const address = await listenOn(server, {
      host: this.host,
      port,
      hostSetting: 'COLLECTOR_HOST',
      ...(rule === undefined
        ? { portSetting: setting }
        : { portSetting: `${setting} rule "${rule.rule}"`, portFix: `change that rule of ${setting} to a free port` }),
    });
    server.on('error', (error) => this.#log.error({ err: error, listener }, 'listener error'));
    this.#log.info({ listener, host: this.host, port: address.port, setting, ...rule }, 'collector listening');
    return address.port;
  }

  #accept(listener: ListenerName, socket: net.Socket): void {
    if (this.#closing || this.#connections.size >= this.#maxConnections) {
      this.#counters[listener].refused.inc();
      socket.destroy();
      const refused = this.#refusals.count();
      if (refused !== undefined) {
        this.#log.warn(
          { listener, peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`, refused, maxConnections: this.#maxConnections },
          'connection refused: too many connections (COLLECTOR_MAX_CONNECTIONS); further refusals are logged at most every 10 s',
        );
      }
      return;
    }
    const conn = new Connection(socket, listener, batteryIdFor(this.#map, socket.remoteAddress, socket.localPort), {
      counters: this.#counters[listener],
      log: this.#log,
      clock: this.#clock,
      submit: (from, batch) => this.#submitter.submit(from, batch),
    });
    this.#connections.add(conn);
    void conn.finished.then(() => this.#connections.delete(conn));
    if (this.#submitter.paused) socket.pause();
  }

  #closeIdle(): void {
    if (this.#submitter.paused) return;
    const cutoff = Date.now() - this.#idleTimeoutMs;
    for (const conn of this.#connections) {
      if (conn.lastActivity <= cutoff && !conn.socket.destroyed) {
        conn.closeReason = 'idle_timeout';
        this.#log.info({ listener: conn.listener, peer: conn.peer, idleTimeoutMs: this.#idleTimeoutMs }, 'closing idle connection');
        conn.socket.destroy();
      }
    }
  }

  drain(): Promise<void> {
    return this.#submitter.drain();
  }

  #closed: Promise<void> | undefined;
  close(): Promise<void> {
    return (this.#closed ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#idleTimer);
    const stopped = this.#servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())));
    const finished: Promise<void>[] = [];
    for (const conn of this.#connections) {
      conn.closeReason = 'shutdown';
      conn.socket.destroy();
      finished.push(conn.finished);
    }
    // Their 'close' events count partial frames and messages and hand over the last records.
    await Promise.all([...stopped, ...finished]);
    await this.#submitter.close();
    this.#log.info({}, 'collector closed');
  }
}
