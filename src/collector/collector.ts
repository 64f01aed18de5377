/**
 * The TCP collector: a binary listener (16-byte frames, port 23456), a JSON listener (port 23457),
 * and one more binary listener per `port:` rule of the battery map. Decoded records go to a sink:
 * the BatchWriter in the all-in-one process, the disk spool in standalone `collect` mode.
 *
 * `startCollector` starts the listeners and answers a handle with `close()`, so tests start it on
 * port 0 and read the bound ports from the handle. Decoding and socket work run on this thread; the
 * SQLite writes run on the store's writer thread, the spool's writes in libuv's pool.
 *
 * Bad input never stops a listener: every drop is counted per listener and reason, and logged once
 * per connection and reason, with the peer. Records are batched across connections (one submit per
 * listener and kind per turn of the event loop). When the sink falls behind, every socket is
 * paused, so TCP flow control pushes back to the devices instead of memory filling up here.
 */
import net from 'node:net';
import type { Config } from '../config.js';
import { listenOn } from '../listen-error.js';
import { DEFAULT_BATTERY_ID, toNewRecord, type KindName, type NewRecord } from '../records/kinds.js';
import { DEFAULT_CLOCK_BOUND, type ClockBound } from '../records/validate.js';
import { arrivalSeconds, decodeFrameRecord, FrameAssembler, type FrameSink } from './binary-decoder.js';
import { batteryIdFor, parseBatteryMap, type BatteryMap } from './battery-map.js';
import { JsonDecoder, type MessageSink } from './json-decoder.js';
import { silentLogger, type CollectorLogger } from './logger.js';
import { collectorMetrics, type CloseReason, type CollectorMetrics, type ListenerName, type RejectReason } from './metrics.js';

/** Where records go. BatchWriter is one; the spool is the other. */
export interface RecordSink {
  /** Resolves once the records are durable. */
  submit(kind: KindName, records: NewRecord[]): Promise<unknown>;
  /** Records taken and not yet durable: the collector pauses reading while this is high. */
  readonly pendingRecords: number;
}

/**
 * A sink's refusal that retrying will not fix (a full spool): the first `accepted` records were
 * taken (and are durable), the others are counted as dropped.
 */
export function isRefusal(error: unknown): error is Error & { reason: RejectReason; accepted: number } {
  return error instanceof Error && (error as { refused?: unknown }).refused === true;
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
  /** A connection silent this long is closed; 0 never. */
  idleTimeoutMs?: number;
  logger?: CollectorLogger;
  metrics?: CollectorMetrics;
  /** Pause reading while more records than this wait for the sink; resume below lowWaterRecords. */
  highWaterRecords?: number;
  lowWaterRecords?: number;
  /** Upper bound of one submit. */
  maxBatchRecords?: number;
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

interface Connection {
  readonly socket: net.Socket;
  readonly listener: ListenerName;
  readonly peer: string;
  readonly batteryId: string;
  readonly assembler: FrameAssembler | undefined;
  readonly decoder: JsonDecoder | undefined;
  /** Arrival time of the chunk being decoded, Unix seconds. */
  arrival: number;
  lastActivity: number;
  frames: number;
  rejected: Partial<Record<RejectReason, number>>;
  closeReason: CloseReason;
  /** Settles once the socket closed and its leftovers were counted. */
  readonly finished: Promise<void>;
}

interface Batch {
  listener: ListenerName;
  kind: KindName;
  records: NewRecord[];
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;
const REFUSAL_LOG_INTERVAL_MS = 10_000;

class Collector implements CollectorHandle {
  readonly host: string;
  binaryPort = 0;
  jsonPort = 0;
  mappedPorts: number[] = [];
  readonly metrics: CollectorMetrics;
  readonly #options: CollectorOptions;
  readonly #clockBound: ClockBound;
  readonly #sink: RecordSink;
  readonly #log: CollectorLogger;
  readonly #map: BatteryMap;
  readonly #maxConnections: number;
  readonly #idleTimeoutMs: number;
  readonly #highWater: number;
  readonly #lowWater: number;
  readonly #maxBatch: number;
  readonly #servers: net.Server[] = [];
  readonly #connections = new Set<Connection>();
  /** Records decoded this turn, per listener and kind. */
  readonly #pending = new Map<string, Batch>();
  #pendingRecords = 0;
  #flushScheduled = false;
  /** Batches the sink failed to take, retried in order with backoff while reading is paused. */
  #retry: Batch[] = [];
  #retryRecords = 0;
  #retryDelay = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  #paused = false;
  #pressureTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #refusedSinceLog = 0;
  #lastRefusalLog = 0;
  #closing = false;
  readonly #labels: Record<ListenerName, ReturnType<typeof labelled>>;

  constructor(options: CollectorOptions) {
    this.#options = options;
    this.#clockBound = { maxClockSkewSeconds: options.maxClockSkewSeconds ?? DEFAULT_CLOCK_BOUND.maxClockSkewSeconds };
    this.host = options.host;
    this.#sink = options.sink;
    this.#log = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? collectorMetrics;
    this.#map = typeof options.batteryMap === 'string' ? parseBatteryMap(options.batteryMap) : (options.batteryMap ?? parseBatteryMap(''));
    this.#maxConnections = options.maxConnections ?? 2000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
    this.#highWater = options.highWaterRecords ?? 50_000;
    this.#lowWater = options.lowWaterRecords ?? Math.floor(this.#highWater / 4);
    this.#maxBatch = options.maxBatchRecords ?? 10_000;
    this.#labels = { binary: labelled(this.metrics, 'binary'), json: labelled(this.metrics, 'json') };
  }

  get openConnections(): number {
    return this.#connections.size;
  }

  get paused(): boolean {
    return this.#paused;
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
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    if (this.#closing || this.#connections.size >= this.#maxConnections) {
      this.#labels[listener].refused.inc();
      socket.destroy();
      this.#refusedSinceLog++;
      const now = Date.now();
      if (now - this.#lastRefusalLog >= REFUSAL_LOG_INTERVAL_MS) {
        this.#log.warn(
          { listener, peer, refused: this.#refusedSinceLog, maxConnections: this.#maxConnections },
          'connection refused: too many connections (COLLECTOR_MAX_CONNECTIONS); further refusals are logged at most every 10 s',
        );
        this.#lastRefusalLog = now;
        this.#refusedSinceLog = 0;
      }
      return;
    }
    const conn: Connection = {
      socket,
      listener,
      peer,
      batteryId: batteryIdFor(this.#map, socket.remoteAddress, socket.localPort),
      assembler: listener === 'binary' ? new FrameAssembler() : undefined,
      decoder: listener === 'json' ? new JsonDecoder(undefined, this.#clockBound) : undefined,
      arrival: 0,
      lastActivity: Date.now(),
      frames: 0,
      rejected: {},
      closeReason: 'peer',
      finished: new Promise<void>((resolve) => socket.once('close', () => resolve())),
    };
    this.#connections.add(conn);
    const labels = this.#labels[listener];
    labels.open.inc();
    labels.total.inc();
    this.#log.debug({ listener, peer, battery_id: conn.batteryId }, 'connection opened');
    if (this.#paused) socket.pause();

    const onData = listener === 'binary' ? this.#binaryReader(conn) : this.#jsonReader(conn);
    socket.on('data', (chunk: Buffer) => {
      conn.lastActivity = Date.now();
      conn.arrival = arrivalSeconds(conn.lastActivity);
      labels.bytes.inc(chunk.length);
      onData(chunk);
      this.#scheduleFlush();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (conn.closeReason === 'peer') conn.closeReason = 'error';
      this.#log.debug({ listener, peer, code: error.code }, 'connection error');
    });
    socket.on('close', () => this.#finish(conn));
  }

  #binaryReader(conn: Connection): (chunk: Buffer) => void {
    const assembler = conn.assembler!;
    const batch = this.#batchFor('binary', 'battery-data');
    const frames = this.#labels.binary.frames;
    const onFrame: FrameSink = (buf, offset) => {
      const record = decodeFrameRecord(buf, offset, conn.arrival, conn.batteryId);
      if (record !== undefined) {
        batch().records.push(record);
        this.#pendingRecords++;
      } else this.#reject(conn, 'non_finite', buf.toString('hex', offset, offset + 16));
    };
    return (chunk) => {
      const count = assembler.push(chunk, onFrame);
      if (count > 0) {
        conn.frames += count;
        frames.inc(count);
      }
    };
  }

  #jsonReader(conn: Connection): (chunk: Buffer) => void {
    const decoder = conn.decoder!;
    const frames = this.#labels.json.frames;
    const onMessage = this.#messageSink(conn);
    return (chunk) => {
      const before = conn.frames;
      decoder.push(chunk, onMessage);
      if (conn.frames > before) frames.inc(conn.frames - before);
    };
  }

  #messageSink(conn: Connection): MessageSink {
    return (message) => {
      conn.frames++;
      if (!message.ok) {
        this.#reject(conn, message.reason, message.excerpt, message.detail);
        return;
      }
      const input = message.record;
      if (input.battery_id === undefined && conn.batteryId !== DEFAULT_BATTERY_ID) input.battery_id = conn.batteryId;
      this.#batchFor('json', message.kind)().records.push(toNewRecord(message.kind, input, conn.arrival));
      this.#pendingRecords++;
    };
  }

  /** Answers a function giving the current batch of a listener and kind (a fresh one after each flush). */
  #batchFor(listener: ListenerName, kind: KindName): () => Batch {
    const id = `${listener}|${kind}`;
    return () => {
      let batch = this.#pending.get(id);
      if (batch === undefined) {
        batch = { listener, kind, records: [] };
        this.#pending.set(id, batch);
      } else if (batch.records.length >= this.#maxBatch) {
        this.#pending.delete(id);
        this.#submit(batch);
        batch = { listener, kind, records: [] };
        this.#pending.set(id, batch);
      }
      return batch;
    };
  }

  #reject(conn: Connection, reason: RejectReason, excerpt: string, detail?: unknown): void {
    this.#labels[conn.listener].rejected(reason).inc();
    const seen = conn.rejected[reason] ?? 0;
    conn.rejected[reason] = seen + 1;
    if (seen === 0) {
      this.#log.warn(
        { listener: conn.listener, peer: conn.peer, battery_id: conn.batteryId, reason, excerpt, ...(detail === undefined ? {} : { detail }) },
        `bad input dropped (${reason}); further ones on this connection are counted, not logged`,
      );
    }
  }

  #finish(conn: Connection): void {
    if (!this.#connections.delete(conn)) return;
    if (conn.assembler !== undefined && conn.assembler.pendingBytes > 0) {
      const bytes = conn.assembler.pendingBytes;
      conn.assembler.reset();
      this.#reject(conn, 'partial_frame', `${bytes} bytes`);
    }
    if (conn.decoder !== undefined) {
      const before = conn.frames;
      conn.decoder.end(this.#messageSink(conn));
      if (conn.frames > before) this.#labels.json.frames.inc(conn.frames - before);
    }
    this.#scheduleFlush();
    const labels = this.#labels[conn.listener];
    labels.open.dec();
    labels.closed(conn.closeReason).inc();
    const rejected = Object.keys(conn.rejected).length > 0;
    (rejected ? this.#log.info : this.#log.debug).call(
      this.#log,
      { listener: conn.listener, peer: conn.peer, battery_id: conn.batteryId, reason: conn.closeReason, frames: conn.frames, rejected: conn.rejected },
      'connection closed',
    );
  }

  #closeIdle(): void {
    if (this.#paused) return;
    const cutoff = Date.now() - this.#idleTimeoutMs;
    for (const conn of this.#connections) {
      if (conn.lastActivity <= cutoff && !conn.socket.destroyed) {
        conn.closeReason = 'idle_timeout';
        this.#log.info({ listener: conn.listener, peer: conn.peer, idleTimeoutMs: this.#idleTimeoutMs }, 'closing idle connection');
        conn.socket.destroy();
      }
    }
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#pendingRecords === 0) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    for (const batch of this.#pending.values()) if (batch.records.length > 0) this.#submit(batch);
    this.#pending.clear();
  }

  #submit(batch: Batch): void {
    this.#pendingRecords -= batch.records.length;
    this.#labels[batch.listener].accepted(batch.kind).inc(batch.records.length);
    if (this.#retry.length > 0) {
      // The sink is failing: keep order, join the retry queue.
      this.#retry.push(batch);
      this.#retryRecords += batch.records.length;
      this.#checkPressure();
      return;
    }
    this.#send(batch);
  }

  #send(batch: Batch): void {
    const done = this.#sink.submit(batch.kind, batch.records).then(
      () => {
        this.#labels[batch.listener].stored(batch.kind).inc(batch.records.length);
      },
      (error: unknown) => {
        if (isRefusal(error)) {
          // The sink logs its refusals (rate-limited); here they are counted.
          this.#refused(batch, error);
          return;
        }
        if (this.#closing) {
          this.#labels[batch.listener].rejected('store_failed').inc(batch.records.length);
          this.#log.error({ err: error, kind: batch.kind, records: batch.records.length }, 'records lost: the store failed while the collector was closing');
          return;
        }
        this.#log.error({ err: error, kind: batch.kind, records: batch.records.length }, 'the store did not take the records; reading is paused and they are retried');
        this.#retry.push(batch);
        this.#retryRecords += batch.records.length;
        this.#scheduleRetry();
      },
    );
    const tracked = done.finally(() => {
      this.#inFlight.delete(tracked);
      this.#checkPressure();
    });
    this.#inFlight.add(tracked);
    this.#checkPressure();
  }

  #refused(batch: Batch, refusal: { reason: RejectReason; accepted: number }): void {
    const labels = this.#labels[batch.listener];
    if (refusal.accepted > 0) labels.stored(batch.kind).inc(refusal.accepted);
    labels.rejected(refusal.reason).inc(batch.records.length - refusal.accepted);
  }

  #scheduleRetry(): void {
    if (this.#retryTimer !== undefined) return;
    this.#checkPressure();
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#retryNow();
    }, this.#retryDelay);
    this.#retryDelay = Math.min(RETRY_MAX_MS, this.#retryDelay * 2);
  }

  async #retryNow(): Promise<void> {
    while (this.#retry.length > 0) {
      const batch = this.#retry[0]!;
      try {
        await this.#sink.submit(batch.kind, batch.records);
      } catch (error) {
        if (isRefusal(error)) {
          this.#refused(batch, error);
        } else if (!this.#closing) {
          this.#scheduleRetry();
          return;
        } else {
          this.#labels[batch.listener].rejected('store_failed').inc(batch.records.length);
          this.#log.error({ err: error, kind: batch.kind, records: batch.records.length }, 'records lost: the store failed while the collector was closing');
        }
        this.#retry.shift();
        this.#retryRecords -= batch.records.length;
        continue;
      }
      this.#labels[batch.listener].stored(batch.kind).inc(batch.records.length);
      this.#retry.shift();
      this.#retryRecords -= batch.records.length;
    }
    this.#retryDelay = RETRY_MIN_MS;
    this.#log.info({}, 'the store takes records again; reading resumes');
    this.#checkPressure();
  }

  /** Pauses every socket while the sink is behind or failing; resumes once it has caught up. */
  #checkPressure(): void {
    const load = this.#sink.pendingRecords + this.#pendingRecords + this.#retryRecords;
    const failing = this.#retry.length > 0;
    if (!this.#paused && (failing || load > this.#highWater)) {
      this.#paused = true;
      this.metrics.backpressure.set(1);
      this.#log.debug({ load, failing }, 'reading paused: the sink is behind');
      for (const conn of this.#connections) conn.socket.pause();
      // Nothing else may call back when another producer drains the writer: look again soon.
      this.#pressureTimer = setInterval(() => this.#checkPressure(), 10).unref();
    } else if (this.#paused && !failing && load < this.#lowWater) {
      this.#paused = false;
      this.metrics.backpressure.set(0);
      this.#log.debug({ load }, 'reading resumed');
      clearInterval(this.#pressureTimer);
      this.#pressureTimer = undefined;
      const now = Date.now();
      for (const conn of this.#connections) {
        // Time spent paused by us is not the device's silence.
        conn.lastActivity = now;
        if (!this.#closing) conn.socket.resume();
      }
    }
  }

  async drain(): Promise<void> {
    for (;;) {
      this.#flush();
      if (this.#inFlight.size === 0 && this.#retry.length === 0 && this.#pendingRecords === 0) return;
      if (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
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
    if (this.#retryTimer !== undefined) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      await this.#retryNow();
    }
    await this.drain();
    clearInterval(this.#pressureTimer);
    this.#log.info({}, 'collector closed');
  }
}

/** Pre-bound label children: a labelled inc() per chunk or batch, not a label lookup per frame. */
function labelled(metrics: CollectorMetrics, listener: ListenerName) {
  const byReason = new Map<string, { inc(n?: number): void }>();
  const child = <T>(cache: Map<string, T>, key: string, make: () => T): T => {
    let value = cache.get(key);
    if (value === undefined) {
      value = make();
      cache.set(key, value);
    }
    return value;
  };
  const byKind = new Map<string, { inc(n?: number): void }>();
  const storedByKind = new Map<string, { inc(n?: number): void }>();
  const closedBy = new Map<string, { inc(n?: number): void }>();
  return {
    frames: metrics.framesReceived.labels(listener),
    bytes: metrics.bytesReceived.labels(listener),
    open: metrics.connectionsOpen.labels(listener),
    total: metrics.connectionsTotal.labels(listener),
    refused: metrics.connectionsRefused.labels(listener),
    rejected: (reason: RejectReason) => child(byReason, reason, () => metrics.rejected.labels(listener, reason)),
    accepted: (kind: KindName) => child(byKind, kind, () => metrics.recordsAccepted.labels(listener, kind)),
    stored: (kind: KindName) => child(storedByKind, kind, () => metrics.recordsStored.labels(listener, kind)),
    closed: (reason: CloseReason) => child(closedBy, reason, () => metrics.connectionsClosed.labels(listener, reason)),
  };
}
