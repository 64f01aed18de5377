/**
 * The TCP collector: a binary listener (16-byte frames, port 23456), a JSON listener (port 23457),
 * one more binary listener per `port:` rule of the battery map, and in the all-in-one process the
 * edge protocol v2 listener (port 23458, v2/: sequenced, checksummed, acknowledged frames; the
 * standalone relay does not open it, as its spool cannot say what is durable in the store).
 * Devices do not authenticate, so what bounds a client is here: connections from peers outside
 * COLLECTOR_ALLOW are closed at once, at most COLLECTOR_MAX_CONNECTIONS are open (all listeners
 * together) and at most COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS from one address, a connection that
 * sends nothing within COLLECTOR_FIRST_BYTE_TIMEOUT (a v2 one: that has not completed its handshake)
 * is closed, and one silent for COLLECTOR_IDLE_TIMEOUT later on too.
 * At start-up a warning says so when the listeners are reachable from other hosts with no allow list.
 * Each connection (connection.ts) decodes what it reads
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
import type { Config, Network } from '../config.js';
import type { RecordBatch } from '../ingest/record-batch.js';
import { isRefusal, RecordsRefusedError, type RecordSink } from '../ingest/record-sink.js';
import { listenOn } from '../listen-error.js';
import { DEFAULT_CLOCK_BOUND, type ClockBound } from '../records/validate.js';
import { batteryIdFor, parseBatteryMap, type BatteryMap } from './battery-map.js';
import { Connection } from './connection.js';
import { listenerCounters, type ListenerCounters } from './listener-counters.js';
import { LogEvery } from './log-every.js';
import { silentLogger, type CollectorLogger } from './logger.js';
import { createCollectorMetrics, type CloseReason, type CollectorMetrics, type ListenerName, type RefuseReason } from './metrics.js';
import { canonicalAddress, isLoopback, peerAllowList } from './peer-address.js';
import { Submitter } from './submitter.js';
import type { StreamPositions } from './v2/stream-positions.js';
import { Streams } from './v2/streams.js';
import { V2Connection } from './v2/v2-connection.js';

/** The edge protocol v2 listener: only where the sink is the store (an ack says "durable in the store"). */
export interface V2ListenerOptions {
  /** COLLECTOR_V2_PORT. */
  port: number;
  /** Where each stream's acknowledged position is kept across restarts. */
  positions: StreamPositions;
}

/** What the collector tracks of a connection of any listener. */
interface OpenConnection {
  readonly socket: net.Socket;
  readonly listener: ListenerName;
  readonly peer: string;
  closeReason: CloseReason;
  lastActivity: number;
  readonly finished: Promise<void>;
}

export interface CollectorOptions {
  host: string;
  binaryPort: number;
  jsonPort: number;
  sink: RecordSink;
  /** COLLECTOR_BATTERY_MAP text or a parsed map. */
  batteryMap?: string | BatteryMap;
  /** Over this many open connections (all listeners together) new ones are refused. */
  maxConnections?: number;
  /** Over this many open connections from one peer address (all listeners together) new ones from it are refused. */
  maxConnectionsPerAddress?: number;
  /** COLLECTOR_ALLOW: peers outside these networks are refused; empty or unset, every peer is taken. */
  allow?: readonly Network[];
  /** A connection that sent nothing this long after it opened is closed; 0 never. */
  firstByteTimeoutMs?: number;
  /** A connection silent this long is closed; 0 never. */
  idleTimeoutMs?: number;
  logger?: CollectorLogger;
  metrics?: CollectorMetrics;
  /** JSON records more than this far ahead of the server clock are rejected (MAX_CLOCK_SKEW_SECONDS). */
  maxClockSkewSeconds?: number;
  /** The v2 listener; none without it (the standalone relay). */
  v2?: V2ListenerOptions;
}

/** Options from the settings: COLLECTOR_HOST, ports, battery map, allow list, limits. */
export function collectorOptionsFromConfig(
  config: Pick<
    Config,
    | 'collectorHost'
    | 'collectorBinaryPort'
    | 'collectorJsonPort'
    | 'collectorBatteryMap'
    | 'collectorMaxConnections'
    | 'collectorMaxConnectionsPerAddress'
    | 'collectorAllow'
    | 'collectorFirstByteTimeoutSeconds'
    | 'collectorIdleTimeoutSeconds'
    | 'maxClockSkewSeconds'
  >,
): Omit<CollectorOptions, 'sink'> {
  return {
    host: config.collectorHost,
    binaryPort: config.collectorBinaryPort,
    jsonPort: config.collectorJsonPort,
    batteryMap: config.collectorBatteryMap,
    maxConnections: config.collectorMaxConnections,
    maxConnectionsPerAddress: config.collectorMaxConnectionsPerAddress,
    allow: config.collectorAllow,
    firstByteTimeoutMs: config.collectorFirstByteTimeoutSeconds * 1000,
    idleTimeoutMs: config.collectorIdleTimeoutSeconds * 1000,
    maxClockSkewSeconds: config.maxClockSkewSeconds,
  };
}

export interface CollectorHandle {
  readonly host: string;
  readonly binaryPort: number;
  readonly jsonPort: number;
  /** The v2 listener's port; undefined when there is none. */
  readonly v2Port: number | undefined;
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
  v2Port: number | undefined;
  mappedPorts: number[] = [];
  readonly metrics: CollectorMetrics;
  readonly #options: CollectorOptions;
  readonly #clock: ClockBound;
  readonly #log: CollectorLogger;
  readonly #map: BatteryMap;
  readonly #maxConnections: number;
  readonly #maxConnectionsPerAddress: number;
  /** Undefined: every peer may connect. */
  readonly #allowed: ((address: string) => boolean) | undefined;
  readonly #firstByteTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #counters: Record<ListenerName, ListenerCounters>;
  readonly #submitter: Submitter;
  readonly #servers: net.Server[] = [];
  /** Bound listeners, for the start-up warning. */
  readonly #bound: { listener: ListenerName; address: string; port: number }[] = [];
  readonly #connections = new Set<OpenConnection>();
  /** v2: open streams and their positions; v2 submissions not yet settled; whether v2 reading is held back. */
  readonly #streams: Streams | undefined;
  readonly #v2Settling = new Set<Promise<void>>();
  readonly #v2InFlight = new Set<Promise<boolean>>();
  /** Aborted at close: v2 batches the sink still holds get one last attempt. */
  readonly #v2Closing = new AbortController();
  #v2Paused = false;
  /** Open connections per peer address (canonicalAddress). */
  readonly #perAddress = new Map<string, number>();
  readonly #refusals: Record<RefuseReason, LogEvery> = { max_connections: new LogEvery(10_000), per_address: new LogEvery(10_000), not_allowed: new LogEvery(10_000) };
  readonly #silentCloses = new LogEvery(10_000);
  #sweepTimer: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(options: CollectorOptions) {
    this.#options = options;
    this.#clock = { maxClockSkewSeconds: options.maxClockSkewSeconds ?? DEFAULT_CLOCK_BOUND.maxClockSkewSeconds };
    this.host = options.host;
    this.#log = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? createCollectorMetrics();
    this.#map = typeof options.batteryMap === 'string' ? parseBatteryMap(options.batteryMap) : (options.batteryMap ?? parseBatteryMap(''));
    this.#maxConnections = options.maxConnections ?? 2000;
    this.#maxConnectionsPerAddress = options.maxConnectionsPerAddress ?? 256;
    this.#allowed = peerAllowList(options.allow ?? []);
    this.#firstByteTimeoutMs = options.firstByteTimeoutMs ?? 10_000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
    this.#counters = { binary: listenerCounters(this.metrics, 'binary'), json: listenerCounters(this.metrics, 'json'), v2: listenerCounters(this.metrics, 'v2') };
    if (options.v2 !== undefined) {
      this.#streams = new Streams(options.v2.positions, this.#log);
      options.sink.on('drained', this.#resumeV2);
    }
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
          // v2 connections may be held back by their own submissions too (#submitV2).
          if (!this.#closing && !(conn.listener === 'v2' && this.#v2Paused)) conn.socket.resume();
        }
      },
    });
  }

  get openConnections(): number {
    return this.#connections.size;
  }

  get paused(): boolean {
    return this.#submitter.paused || this.#v2Paused;
  }

  /** One "collector listening" line per listener; a port that cannot be had throws a ListenError naming its setting. */
  async listen(): Promise<void> {
    this.binaryPort = await this.#listen('binary', this.#options.binaryPort, 'COLLECTOR_BINARY_PORT');
    this.jsonPort = await this.#listen('json', this.#options.jsonPort, 'COLLECTOR_JSON_PORT');
    for (const [port, batteryId] of this.#map.byPort) {
      if (port === this.binaryPort || port === this.jsonPort) continue;
      this.mappedPorts.push(await this.#listen('binary', port, 'COLLECTOR_BATTERY_MAP', { rule: `port:${port}=${batteryId}`, battery_id: batteryId }));
    }
    if (this.#options.v2 !== undefined) this.v2Port = await this.#listen('v2', this.#options.v2.port, 'COLLECTOR_V2_PORT');
    const timeouts = [this.#firstByteTimeoutMs, this.#idleTimeoutMs].filter((ms) => ms > 0);
    if (timeouts.length > 0) {
      const every = Math.min(1000, Math.max(20, Math.floor(Math.min(...timeouts) / 4)));
      this.#sweepTimer = setInterval(() => this.#closeSilent(), every).unref();
    }
    this.#warnIfExposed();
  }

  /**
   * Devices do not authenticate: a listener other hosts can reach takes whatever any of them sends.
   * Said once at start-up, unless COLLECTOR_ALLOW names who may connect.
   */
  #warnIfExposed(): void {
    const exposed = this.#bound.filter((b) => !isLoopback(b.address));
    if (exposed.length === 0) return;
    const listeners = exposed.map((b) => `${b.listener} ${b.address}:${b.port}`).join(', ');
    if (this.#allowed === undefined) {
      this.#log.warn(
        { host: this.host, listeners },
        `the TCP collector is reachable from other hosts (${listeners}) and takes unauthenticated input from any host that can reach it: ` +
          'set COLLECTOR_ALLOW to the networks of your devices, or COLLECTOR_HOST=127.0.0.1 to take input from this machine only',
      );
    } else {
      const allow = (this.#options.allow ?? []).map((n) => `${n.address}/${n.prefix}`).join(',');
      this.#log.info({ host: this.host, listeners, allow }, 'the TCP collector takes connections from COLLECTOR_ALLOW only');
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
    this.#bound.push({ listener, address: address.address, port: address.port });
    this.#log.info({ listener, host: this.host, port: address.port, setting, ...rule }, 'collector listening');
    return address.port;
  }

  #accept(listener: ListenerName, socket: net.Socket): void {
    // Without an address the peer is already gone (reset before we got to it).
    if (this.#closing || socket.remoteAddress === undefined) {
      socket.destroy();
      return;
    }
    const address = canonicalAddress(socket.remoteAddress);
    const refusal = this.#refusalOf(address);
    if (refusal !== undefined) {
      this.#refuse(listener, socket, refusal);
      return;
    }
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1);
    const conn =
      listener === 'v2'
        ? this.#v2Connection(socket)
        : new Connection(socket, listener, batteryIdFor(this.#map, socket.remoteAddress, socket.localPort), {
            counters: this.#counters[listener],
            log: this.#log,
            clock: this.#clock,
            submit: (from, batch) => this.#submitter.submit(from, batch),
          });
    this.#connections.add(conn);
    void conn.finished.then(() => {
      this.#connections.delete(conn);
      const open = (this.#perAddress.get(address) ?? 1) - 1;
      if (open > 0) this.#perAddress.set(address, open);
      else this.#perAddress.delete(address);
    });
    if (this.paused) socket.pause();
  }

  #v2Connection(socket: net.Socket): V2Connection {
    const conn = new V2Connection(socket, {
      counters: this.#counters.v2,
      metrics: this.metrics,
      log: this.#log,
      streams: this.#streams!,
      maxClockSkewSeconds: this.#clock.maxClockSkewSeconds,
      handshakeTimeoutMs: this.#firstByteTimeoutMs,
      submit: (batch) => this.#submitV2(batch),
      paused: () => this.paused,
    });
    const settled = conn.settled.finally(() => this.#v2Settling.delete(settled));
    this.#v2Settling.add(settled);
    return conn;
  }

  /**
   * A v2 batch to the sink, as the Submitter hands the other listeners' (a device's stream: retried
   * until the collector closes, records refused alone), but answering whether it is durable: the
   * connection acknowledges on that. True too when the store refused records for good (counted).
   */
  #submitV2(batch: RecordBatch): Promise<boolean> {
    const { sink } = this.#options;
    const counters = this.#counters.v2;
    const { kind, length } = batch;
    counters.accepted(kind).inc(length);
    // A frame sent again is counted when the store says its key was held, whenever it was stored (before a crash too).
    const existing = (rows: readonly number[]) => this.metrics.v2Duplicates.inc(rows.length);
    const durable = sink.submit(batch, { retryUntil: this.#v2Closing.signal, atomic: false, existing }).then(
      () => {
        counters.stored(kind).inc(length);
        return true;
      },
      (error: unknown) => {
        if (error instanceof RecordsRefusedError) {
          counters.stored(kind).inc(error.stored);
          counters.rejected('store_refused').inc(length - error.stored);
          return true;
        }
        counters.rejected(isRefusal(error) ? error.reason : 'store_failed').inc(length);
        this.#log.error({ err: error, listener: 'v2', kind, records: length }, 'v2 records not stored and not acknowledged: the device sends them again');
        return false;
      },
    );
    const tracked = durable.finally(() => this.#v2InFlight.delete(tracked));
    this.#v2InFlight.add(tracked);
    if (sink.full && !this.#v2Paused) {
      this.#v2Paused = true;
      this.metrics.backpressure.set(1);
      for (const conn of this.#connections) if (conn.listener === 'v2') conn.socket.pause();
    }
    return durable;
  }

  readonly #resumeV2 = (): void => {
    if (!this.#v2Paused) return;
    this.#v2Paused = false;
    if (!this.#submitter.paused) this.metrics.backpressure.set(0);
    const now = Date.now();
    for (const conn of this.#connections) {
      if (conn.listener !== 'v2' || this.#closing || this.#submitter.paused) continue;
      conn.lastActivity = now;
      conn.socket.resume();
    }
  };

  /** Why a new connection from `address` is refused, if it is: the allow list first, then the limits. */
  #refusalOf(address: string): RefuseReason | undefined {
    if (this.#allowed !== undefined && !this.#allowed(address)) return 'not_allowed';
    if (this.#connections.size >= this.#maxConnections) return 'max_connections';
    if ((this.#perAddress.get(address) ?? 0) >= this.#maxConnectionsPerAddress) return 'per_address';
    return undefined;
  }

  /** Closes at once, without reading a byte; counted per reason, logged at most every 10 s per reason. */
  #refuse(listener: ListenerName, socket: net.Socket, reason: RefuseReason): void {
    this.#counters[listener].refused(reason).inc();
    socket.destroy();
    const refused = this.#refusals[reason].count();
    if (refused === undefined) return;
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const later = 'further refusals are logged at most every 10 s';
    if (reason === 'not_allowed') {
      this.#log.warn({ listener, peer, refused, reason }, `connection refused: the peer is not in COLLECTOR_ALLOW; ${later}`);
    } else if (reason === 'per_address') {
      this.#log.warn(
        { listener, peer, refused, reason, maxConnectionsPerAddress: this.#maxConnectionsPerAddress },
        `connection refused: too many connections from one address (COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS); ${later}`,
      );
    } else {
      this.#log.warn({ listener, peer, refused, reason, maxConnections: this.#maxConnections }, `connection refused: too many connections (COLLECTOR_MAX_CONNECTIONS); ${later}`);
    }
  }

  /**
   * Closes connections that never sent a byte within the first-byte timeout (a device sends at
   * once; a socket held open without a word only takes a slot), and those silent for the idle
   * timeout. Not while reading is paused: then the silence is ours.
   */
  #closeSilent(): void {
    if (this.paused) return;
    const now = Date.now();
    for (const conn of this.#connections) {
      if (conn.socket.destroyed) continue;
      const silentMs = now - conn.lastActivity;
      if (this.#firstByteTimeoutMs > 0 && conn.socket.bytesRead === 0 && silentMs >= this.#firstByteTimeoutMs) {
        conn.closeReason = 'first_byte_timeout';
        conn.socket.destroy();
        // A scan or a flood of idle sockets can close thousands at once: counted, logged now and then.
        const closed = this.#silentCloses.count();
        if (closed !== undefined) {
          this.#log.info(
            { listener: conn.listener, peer: conn.peer, closed, firstByteTimeoutMs: this.#firstByteTimeoutMs },
            'closing connections that sent nothing since they opened (COLLECTOR_FIRST_BYTE_TIMEOUT); further ones are logged at most every 10 s',
          );
        }
      } else if (this.#idleTimeoutMs > 0 && silentMs >= this.#idleTimeoutMs) {
        conn.closeReason = 'idle_timeout';
        this.#log.info({ listener: conn.listener, peer: conn.peer, idleTimeoutMs: this.#idleTimeoutMs }, 'closing idle connection');
        conn.socket.destroy();
      }
    }
  }

  async drain(): Promise<void> {
    await this.#submitter.drain();
    while (this.#v2InFlight.size > 0) await Promise.allSettled([...this.#v2InFlight]);
  }

  #closed: Promise<void> | undefined;
  close(): Promise<void> {
    return (this.#closed ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#sweepTimer);
    const stopped = this.#servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())));
    const finished: Promise<void>[] = [];
    for (const conn of this.#connections) {
      conn.closeReason = 'shutdown';
      conn.socket.destroy();
      finished.push(conn.finished);
    }
    // Their 'close' events count partial frames and messages and hand over the last records.
    await Promise.all([...stopped, ...finished]);
    this.#v2Closing.abort();
    await this.#submitter.close();
    // v2: the last batches settle, their acks (to closed sockets) move the positions, which are saved.
    await Promise.all(this.#v2Settling);
    this.#options.sink.off('drained', this.#resumeV2);
    await this.#streams?.close();
    this.#log.info({}, 'collector closed');
  }
}
