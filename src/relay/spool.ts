/**
 * The standalone collector's disk spool: records wait here until the API has acknowledged them, so
 * nothing is lost while the API or its database is away, or when the collector is killed.
 *
 * Layout under DATA_DIR/spool:
 *
 * ```
 *   spool-id                       random id of this spool, part of every idempotency key
 *   battery-data/
 *     00000000000000000000.seg     append-only segment: one record per line, the API's JSON shape;
 *     00000000000000120000.seg     the name is the position (record number) of its first line
 *     state.json                   {"acked": P, "inflight": Q}: records before P are acknowledged;
 *                                  [P, Q) is the batch being sent (resent as it is after a restart)
 *   battery-performance/ ...       one queue per kind: each is delivered in order, kinds independently
 * ```
 *
 * A record counts as accepted once its line is written and fdatasync'd (group commit: every
 * submission waiting when a write starts shares its sync). The forwarder reads only synced lines.
 * Positions are never reused: the idempotency key of a batch is spool id, kind and start position,
 * and because a batch is retried with the same range (persisted as `inflight` before it is first
 * sent), a retry after a lost answer or a kill -9 is never stored twice.
 *
 * After a crash the last segment may end with a torn, unsynced line: on open, each kind's last
 * segment is checked line by line and cut at the first line that does not parse. Synced lines are
 * never lost (fdatasync), and nothing unsynced was ever sent.
 *
 * Bounded by SPOOL_MAX_BYTES (bytes of segment files): a warning is logged as it passes 50, 80 and
 * 95 % full, and when full, new records are refused (SpoolFullError, counted as spool_full by the
 * collector), never dropped silently.
 *
 * The spool is the relay's record sink (ingest/record-sink.ts): the collector submits record
 * batches and pauses its sockets while records wait for their sync past a bound, or while writes
 * fail; a failed write (disk error) is retried with backoff for the collector's batches, in order.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { LogEvery } from '../collector/log-every.js';
import { silentLogger, type CollectorLogger } from '../collector/logger.js';
import type { CollectorMetrics } from '../collector/metrics.js';
import { Backoff } from '../ingest/backoff.js';
import type { RecordBatch } from '../ingest/record-batch.js';
import { PendingBound, type RecordSink, type SubmitOptions } from '../ingest/record-sink.js';
import { inputFields, KIND_NAMES, type KindName } from '../records/kinds.js';

/** The most records and bytes one batch (one POST) holds. Changing them is safe (see `inflight`). */
export const MAX_BATCH_RECORDS = 10_000;
export const MAX_BATCH_BYTES = 8 * 1024 * 1024;
const WARN_LEVELS = [0.5, 0.8, 0.95];
const POSITION_DIGITS = 20;
const NEWLINE = 0x0a;

/**
 * The spool had room for only the first `accepted` records of a submission (they are durable when
 * this is thrown); the rest were refused.
 */
export class SpoolFullError extends Error {
  override name = 'SpoolFullError';
  readonly refused = true;
  readonly reason = 'spool_full' as const;
  constructor(
    message: string,
    readonly accepted: number,
  ) {
    super(message);
  }
}

export interface SpoolOptions {
  /** SPOOL_MAX_BYTES. */
  maxBytes: number;
  /** Records submitted and not yet durable past which the spool is full (the collector pauses). */
  maxPendingRecords?: number;
  logger?: CollectorLogger;
  metrics?: CollectorMetrics;
  /** Segment size; default maxBytes / 16, between 64 KiB and 16 MiB. */
  segmentBytes?: number;
}

/** A run of records of one kind, ready to POST. */
export interface SpoolBatch {
  kind: KindName;
  /** Position of the first record; the batch holds positions [start, end). */
  start: number;
  end: number;
  /** A JSON array of the records, as the API takes it. */
  body: Buffer;
  /** Idempotency-Key: the same for every attempt of this batch, in this process or after a restart. */
  key: string;
}

interface Segment {
  start: number;
  file: string;
  /** Bytes in the file (written). */
  bytes: number;
}

/** A submission's lines, held off the JS heap until written. */
interface Lines {
  data: Buffer;
  records: number;
  bytes: number;
  retryUntil: AbortSignal | undefined;
  resolve(): void;
  reject(error: Error): void;
}

interface KindQueue {
  kind: KindName;
  dir: string;
  segments: Segment[];
  /** Open handle of the last segment, when there is one to append to. */
  handle: fs.FileHandle | undefined;
  /** Next position to assign. */
  appended: number;
  /** Records before this are durable. */
  synced: number;
  acked: number;
  inflight: number | undefined;
  /** Byte offset of `acked` in segments[0]. */
  ackOffset: number;
  /** Lines submitted, not yet written. */
  queue: Lines[];
  /** Called when new records become durable. */
  notify: (() => void)[];
}

/** JSON text of the few distinct strings records carry (sources, battery ids), and whether it is ASCII. */
const quotedCache = new Map<string, { json: string; ascii: boolean }>();
function quoted(value: string): { json: string; ascii: boolean } {
  let q = quotedCache.get(value);
  if (q === undefined) {
    const json = JSON.stringify(value);
    q = { json, ascii: Buffer.byteLength(json) === json.length };
    if (quotedCache.size >= 10_000) quotedCache.clear();
    quotedCache.set(value, q);
  }
  return q;
}

const num = (value: number) => (Number.isFinite(value) ? `${value}` : 'null');

/**
 * The API's JSON shape of a record (what a POST /api/{kind} takes: the fields the kinds table says
 * a producer sends), built as text directly: this runs for every record the collector takes, and
 * an object plus JSON.stringify per record would double its cost and its garbage.
 */
export function recordLine(batch: RecordBatch, row: number): string {
  return encodeLine(batch, row).line.slice(0, -1);
}

function encodeLine(batch: RecordBatch, row: number): { line: string; bytes: number } {
  let line = '';
  // Field names are ASCII: only strings decide whether a character takes more than a byte.
  let ascii = true;
  for (const field of inputFields(batch.kind)) {
    const value = batch.value(row, field.name);
    if (value === undefined) continue;
    let text: string;
    if (typeof value === 'string') {
      const q = quoted(value);
      ascii &&= q.ascii;
      text = q.json;
    } else if (typeof value === 'number') text = num(value);
    // An array field (per-cell readings): finite numbers, as validation let them through.
    else text = `[${value.map(num).join(',')}]`;
    line += `${line === '' ? '{' : ','}"${field.name}":${text}`;
  }
  line += '}\n';
  return { line, bytes: ascii ? line.length : Buffer.byteLength(line) };
}

const segmentName = (start: number) => `${String(start).padStart(POSITION_DIGITS, '0')}.seg`;

export class Spool extends EventEmitter implements RecordSink {
  readonly dir: string;
  readonly id: string;
  readonly maxBytes: number;
  readonly #segmentBytes: number;
  readonly #log: CollectorLogger;
  readonly #metrics: CollectorMetrics | undefined;
  readonly #kinds: Record<KindName, KindQueue>;
  /** Bytes of segment files plus bytes reserved by submissions not yet written. */
  #usedBytes = 0;
  #pendingRecords = 0;
  #writing: Promise<void> | undefined;
  #io: Promise<unknown> = Promise.resolve();
  #warnedLevel = 0;
  readonly #refusals = new LogEvery(10_000);
  readonly #bound: PendingBound;
  /** While a write failed: its lines wait for the next attempt (SubmitOptions.retryUntil). */
  readonly #backoff = new Backoff({ minMs: 100, maxMs: 5000 });
  #failing = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;
  /** whenEmpty() callers, called once nothing waits. */
  #emptyWaiters: (() => void)[] = [];

  private constructor(dir: string, id: string, options: SpoolOptions, kinds: Record<KindName, KindQueue>, usedBytes: number) {
    super();
    this.dir = dir;
    this.id = id;
    this.maxBytes = options.maxBytes;
    this.#segmentBytes = options.segmentBytes ?? Math.min(16 * 1024 * 1024, Math.max(64 * 1024, Math.floor(options.maxBytes / 16)));
    this.#log = options.logger ?? silentLogger;
    this.#metrics = options.metrics;
    this.#kinds = kinds;
    this.#usedBytes = usedBytes;
    this.#bound = new PendingBound(options.maxPendingRecords ?? 100_000, () => this.emit('drained'));
    this.#metrics?.spoolCapacityBytes.set(this.maxBytes);
    this.#updateGauges();
  }

  /** Opens the spool in `dir` (creating it), recovering what a previous run left. */
  static async open(dir: string, options: SpoolOptions): Promise<Spool> {
    mkdirSync(dir, { recursive: true });
    const idFile = path.join(dir, 'spool-id');
    let id: string;
    try {
      id = readFileSync(idFile, 'utf8').trim();
    } catch {
      id = randomBytes(8).toString('hex');
      writeFileSync(idFile, `${id}\n`, { flush: true });
      await fsyncDir(dir);
    }
    const log = options.logger ?? silentLogger;
    const kinds = {} as Record<KindName, KindQueue>;
    let usedBytes = 0;
    for (const kind of KIND_NAMES) {
      const queue = await recoverKind(path.join(dir, kind), kind, log);
      kinds[kind] = queue;
      for (const segment of queue.segments) usedBytes += segment.bytes;
      const waiting = queue.appended - queue.acked;
      if (waiting > 0) log.info({ kind, records: waiting, acked: queue.acked, inflight: queue.inflight }, 'spool: records from an earlier run wait for the API');
    }
    return new Spool(dir, id, options, kinds, usedBytes);
  }

  /** Records submitted and not yet durable. */
  get pendingRecords(): number {
    return this.#pendingRecords;
  }

  /** True while the collector should stop reading: many records wait for their sync, or writes fail. */
  get full(): boolean {
    return this.#bound.full;
  }

  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** Resolves once nothing waits: every record submitted is durable and acknowledged, or was refused. */
  whenEmpty(): Promise<void> {
    if (this.#isEmpty()) return Promise.resolve();
    return new Promise((resolve) => this.#emptyWaiters.push(resolve));
  }

  #isEmpty(): boolean {
    return this.#pendingRecords === 0 && this.depth().records === 0;
  }

  /** After an ack or a write: wakes whenEmpty() callers once it holds nothing. */
  #checkEmpty(): void {
    if (this.#emptyWaiters.length === 0 || !this.#isEmpty()) return;
    const waiters = this.#emptyWaiters;
    this.#emptyWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Records durable in the spool and not yet acknowledged by the API, per kind and in all. */
  depth(): { records: number; bytes: number; byKind: Record<KindName, number> } {
    const byKind = {} as Record<KindName, number>;
    let records = 0;
    for (const kind of KIND_NAMES) {
      const q = this.#kinds[kind];
      byKind[kind] = q.synced - q.acked;
      records += byKind[kind];
    }
    return { records, bytes: this.#usedBytes, byKind };
  }

  /**
   * Appends a batch's records; resolves once they are durable. When not all fit, the ones that do
   * are appended and, once durable, SpoolFullError says how many that was; the rest are refused.
   * A write that fails is retried (with backoff) for a submission with `retryUntil`, else fails it.
   */
  submit(batch: RecordBatch, options: SubmitOptions = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the spool is closed'));
    if (batch.length === 0) return Promise.resolve();
    const room = this.maxBytes - this.#usedBytes;
    const lines: string[] = [];
    let bytes = 0;
    let count = 0;
    for (let row = 0; row < batch.length; row++) {
      const { line, bytes: lineBytes } = encodeLine(batch, row);
      if (bytes + lineBytes > room) break;
      lines.push(line);
      bytes += lineBytes;
      count++;
    }
    const refused = batch.length - count;
    if (refused > 0) {
      const since = this.#refusals.count(refused);
      if (since !== undefined) {
        this.#log.warn({ refused: since, usedBytes: this.#usedBytes, maxBytes: this.maxBytes }, 'spool full: new records are refused until the API takes some (SPOOL_MAX_BYTES)');
      }
    }
    const full = () => new SpoolFullError(`spool full (SPOOL_MAX_BYTES=${this.maxBytes}): ${refused} of ${batch.length} records refused`, count);
    if (count === 0) return Promise.reject(full());
    this.#usedBytes += bytes;
    this.#pendingRecords += count;
    this.#bound.update(this.#pendingRecords, this.#failing);
    this.#checkLevel();
    const durable = new Promise<void>((resolve, reject) => {
      // Held as bytes off the JS heap until written; the line strings die young. (Joining them
      // first would make one string of megabytes, allocated straight into the old generation.)
      const data = Buffer.allocUnsafeSlow(bytes);
      let offset = 0;
      for (const line of lines) offset += data.write(line, offset);
      this.#kinds[batch.kind].queue.push({ data, records: count, bytes, retryUntil: options.retryUntil, resolve, reject });
      this.#scheduleWrite();
    });
    return refused === 0 ? durable : durable.then(() => Promise.reject(full()));
  }

  #checkLevel(): void {
    const fill = this.#usedBytes / this.maxBytes;
    const level = WARN_LEVELS.filter((l) => fill >= l).at(-1) ?? 0;
    if (level > this.#warnedLevel) {
      this.#warnedLevel = level;
      this.#log.warn(
        { percent: Math.round(fill * 100), usedBytes: this.#usedBytes, maxBytes: this.maxBytes, records: this.depth().records },
        `spool ${Math.round(level * 100)}% full: the API is not taking records as fast as they arrive`,
      );
    } else if (this.#warnedLevel > 0 && fill < this.#warnedLevel - 0.1) {
      // Warn again if it fills up again later.
      this.#warnedLevel = WARN_LEVELS.filter((l) => fill >= l).at(-1) ?? 0;
    }
  }

  #updateGauges(): void {
    if (this.#metrics === undefined) return;
    this.#metrics.spoolRecords.set(this.depth().records);
    this.#metrics.spoolBytes.set(this.#usedBytes);
  }

  #scheduleWrite(): void {
    // After a failure, the next attempt waits for its timer.
    if (this.#writing !== undefined || this.#retryTimer !== undefined) return;
    this.#writing = this.#exclusive(() => this.#writeAll()).finally(() => {
      this.#writing = undefined;
      if (KIND_NAMES.some((k) => this.#kinds[k].queue.length > 0)) this.#scheduleWrite();
    });
  }

  /** Runs file operations one at a time (writes, rotation, deletion). */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#io.then(fn, fn);
    this.#io = run.catch(() => {});
    return run;
  }

  /** Writes every queued submission, one fdatasync per kind touched, then settles them. */
  async #writeAll(): Promise<void> {
    for (const kind of KIND_NAMES) {
      const q = this.#kinds[kind];
      if (q.queue.length === 0) continue;
      const items = q.queue;
      q.queue = [];
      const records = items.reduce((n, item) => n + item.records, 0);
      try {
        await this.#append(q, items);
        await q.handle!.datasync();
      } catch (error) {
        // Not durable, so not accepted: cut the file back to what was synced; what may be retried
        // waits, in order, ahead of what came since.
        this.#log.error({ err: error, kind }, 'spool write failed');
        const retry = items.filter((item) => !this.#closed && item.retryUntil !== undefined && !item.retryUntil.aborted);
        q.queue = [...retry, ...q.queue];
        await this.#undoAppend(q);
        for (const item of items) {
          if (retry.includes(item)) continue;
          this.#pendingRecords -= item.records;
          item.reject(error as Error);
        }
        if (retry.length > 0) this.#retryLater(retry);
        continue;
      }
      q.synced = q.appended;
      this.#pendingRecords -= records;
      this.#failing = false;
      this.#backoff.reset();
      for (const item of items) item.resolve();
      const notify = q.notify;
      q.notify = [];
      for (const fn of notify) fn();
    }
    this.#bound.update(this.#pendingRecords, this.#failing);
    this.#updateGauges();
    this.#checkEmpty();
  }

  #retryLater(items: Lines[]): void {
    this.#failing = true;
    if (this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(this.#retryNow, this.#backoff.next());
    for (const signal of new Set(items.map((item) => item.retryUntil!))) signal.addEventListener('abort', this.#retryNow, { once: true });
  }

  readonly #retryNow = (): void => {
    if (this.#retryTimer === undefined) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#scheduleWrite();
  };

  async #append(q: KindQueue, items: { data: Buffer; records: number; bytes: number }[]): Promise<void> {
    let i = 0;
    while (i < items.length) {
      const segment = await this.#segmentForAppend(q);
      // Fill this segment up to its size (at least one submission), then the next.
      const chunk: Buffer[] = [];
      let bytes = 0;
      let records = 0;
      while (i < items.length && (chunk.length === 0 || segment.bytes + bytes + items[i]!.bytes <= this.#segmentBytes)) {
        chunk.push(items[i]!.data);
        bytes += items[i]!.bytes;
        records += items[i]!.records;
        i++;
      }
      const { bytesWritten } = await q.handle!.writev(chunk);
      if (bytesWritten < bytes) {
        // A short write (rare: disk full, signals): write the rest in order.
        const rest = Buffer.concat(chunk).subarray(bytesWritten);
        let done = 0;
        while (done < rest.length) done += (await q.handle!.write(rest, done, rest.length - done, null)).bytesWritten;
      }
      segment.bytes += bytes;
      q.appended += records;
    }
  }

  /** The segment to append to: the last one while it has room, else a new one. */
  async #segmentForAppend(q: KindQueue): Promise<Segment> {
    const last = q.segments.at(-1);
    const allAcked = q.acked === q.appended;
    if (last !== undefined && last.bytes < this.#segmentBytes && !(allAcked && last.bytes > 0)) {
      q.handle ??= await fs.open(last.file, 'a');
      return last;
    }
    if (q.handle !== undefined) {
      // Lines written to it since its last sync must be durable before it is left behind.
      await q.handle.datasync();
      await q.handle.close();
      q.handle = undefined;
    }
    if (last !== undefined && allAcked) {
      // Everything in it is acknowledged: delete it rather than keep it.
      await fs.rm(last.file, { force: true });
      this.#usedBytes -= last.bytes;
      q.segments.pop();
    }
    const segment: Segment = { start: q.appended, file: path.join(q.dir, segmentName(q.appended)), bytes: 0 };
    q.handle = await fs.open(segment.file, 'a');
    q.segments.push(segment);
    if (q.segments.length === 1) q.ackOffset = 0;
    await fsyncDir(q.dir);
    return segment;
  }

  /** After a failed write: cut the last segment back to the synced position, and recount the bytes. */
  async #undoAppend(q: KindQueue): Promise<void> {
    try {
      const last = q.segments.at(-1);
      if (last !== undefined) {
        const keep = last.start >= q.synced ? 0 : await offsetOfPosition(last.file, q.synced - last.start);
        await fs.truncate(last.file, keep);
        last.bytes = keep;
      }
      q.appended = q.synced;
    } catch (error) {
      this.#log.error({ err: error, kind: q.kind }, 'spool: cannot undo a failed write');
    }
    await q.handle?.close().catch(() => {});
    q.handle = undefined;
    let used = 0;
    for (const kind of KIND_NAMES) {
      const k = this.#kinds[kind];
      for (const segment of k.segments) used += segment.bytes;
      for (const item of k.queue) used += item.bytes;
    }
    this.#usedBytes = used;
    this.#updateGauges();
  }

  /**
   * The next batch of a kind: from the acknowledged position, durable records only, never across
   * segments. `null` when there is none.
   */
  async nextBatch(kind: KindName): Promise<SpoolBatch | null> {
    return this.#exclusive(async () => {
      const q = this.#kinds[kind];
      if (q.synced <= q.acked || q.segments.length === 0) return null;
      const segment = q.segments[0]!;
      const segmentEnd = q.segments.length > 1 ? q.segments[1]!.start : q.synced;
      let want = Math.min(segmentEnd, q.synced, q.acked + MAX_BATCH_RECORDS) - q.acked;
      let exact = false;
      if (q.inflight !== undefined && q.inflight > q.acked) {
        // Resend the range that was (maybe) sent before, exactly.
        want = q.inflight - q.acked;
        exact = true;
      }
      const body = await readLines(segment.file, q.ackOffset, want, exact ? Infinity : MAX_BATCH_BYTES);
      if (body.lines === 0) return null;
      if (exact && body.lines < want) {
        throw new Error(`spool ${kind}: the batch in flight [${q.acked}, ${q.inflight}) is no longer all on disk`);
      }
      const batch: SpoolBatch = { kind, start: q.acked, end: q.acked + body.lines, body: body.json, key: `spool-${this.id}-${kind}-${q.acked}` };
      this.#batchOffsets.set(batch, q.ackOffset + body.bytes);
      if (q.inflight !== batch.end) {
        q.inflight = batch.end;
        await writeState(q);
      }
      return batch;
    });
  }

  readonly #batchOffsets = new WeakMap<SpoolBatch, number>();

  /** The API has stored the batch: move past it, persist that, and delete segments no longer needed. */
  ack(batch: SpoolBatch): Promise<void> {
    return this.#exclusive(async () => {
      const q = this.#kinds[batch.kind];
      if (batch.start !== q.acked) throw new Error(`spool ${batch.kind}: ack of [${batch.start}, ${batch.end}) but the acknowledged position is ${q.acked}`);
      q.acked = batch.end;
      q.ackOffset = this.#batchOffsets.get(batch)!;
      q.inflight = undefined;
      await writeState(q);
      // Whole segments behind the acknowledged position go; the one being appended to stays.
      while (q.segments.length > 1 && q.segments[1]!.start <= q.acked) {
        const gone = q.segments.shift()!;
        await fs.rm(gone.file, { force: true });
        this.#usedBytes -= gone.bytes;
        q.ackOffset = 0;
      }
      this.#checkLevel();
      this.#updateGauges();
      this.#checkEmpty();
    });
  }

  /** Resolves when a kind has durable records not yet acknowledged (at once if it has). */
  waitForRecords(kind: KindName): Promise<void> {
    const q = this.#kinds[kind];
    if (q.synced > q.acked) return Promise.resolve();
    return new Promise((resolve) => q.notify.push(resolve));
  }

  /** Writes what was submitted, then closes the files. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Lines waiting after a failed write get one last attempt.
    this.#retryNow();
    while (this.#writing !== undefined) await this.#writing;
    await this.#exclusive(async () => {
      for (const kind of KIND_NAMES) {
        const q = this.#kinds[kind];
        await q.handle?.close();
        q.handle = undefined;
        for (const fn of q.notify) fn();
        q.notify = [];
      }
    });
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeState(q: KindQueue): Promise<void> {
  const file = path.join(q.dir, 'state.json');
  const tmp = `${file}.tmp`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(JSON.stringify(q.inflight === undefined ? { acked: q.acked } : { acked: q.acked, inflight: q.inflight }));
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  await fsyncDir(q.dir);
}

/** Byte offset of line `lines` (0-based) of a file: where that many whole lines end. */
async function offsetOfPosition(file: string, lines: number): Promise<number> {
  if (lines <= 0) return 0;
  const data = await fs.readFile(file);
  let offset = 0;
  for (let n = 0; n < lines; n++) {
    const nl = data.indexOf(NEWLINE, offset);
    if (nl < 0) throw new Error(`${file} holds fewer than ${lines} lines`);
    offset = nl + 1;
  }
  return offset;
}

/** Reads up to `maxLines` whole lines from `offset`, as a JSON array (the newlines become commas). */
async function readLines(file: string, offset: number, maxLines: number, maxBytes: number): Promise<{ json: Buffer; lines: number; bytes: number }> {
  const handle = await fs.open(file, 'r');
  try {
    const size = (await handle.stat()).size;
    const available = size - offset;
    let readSize = Math.min(available, Math.max(64 * 1024, Math.min(maxBytes, maxLines * 200)));
    for (;;) {
      // One byte in front for the '['.
      const buf = Buffer.allocUnsafe(readSize + 1);
      let got = 0;
      while (got < readSize) {
        const { bytesRead } = await handle.read(buf, 1 + got, readSize - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      let lines = 0;
      let end = 0; // bytes of whole lines taken
      let at = 1;
      while (lines < maxLines) {
        const nl = buf.indexOf(NEWLINE, at);
        if (nl < 0 || nl >= 1 + got) break;
        if (nl > maxBytes && lines > 0) break; // nl is also the bytes taken so far
        buf[nl] = 0x2c; // ','
        lines++;
        end = nl; // index of the newline just replaced
        at = nl + 1;
      }
      const wantedMore = lines < maxLines && got === readSize && readSize < available && (maxBytes === Infinity || readSize < maxBytes);
      if (wantedMore) {
        readSize = Math.min(available, maxBytes === Infinity ? readSize * 2 : Math.min(maxBytes, readSize * 2));
        continue;
      }
      if (lines === 0) return { json: Buffer.from('[]'), lines: 0, bytes: 0 };
      buf[0] = 0x5b; // '['
      buf[end] = 0x5d; // ']' in place of the last comma
      return { json: buf.subarray(0, end + 1), lines, bytes: end };
    }
  } finally {
    await handle.close();
  }
}

/** Opens one kind's queue: state, segments, and the last segment cut back to its last whole, valid line. */
async function recoverKind(dir: string, kind: KindName, log: CollectorLogger): Promise<KindQueue> {
  await fs.mkdir(dir, { recursive: true });
  let acked = 0;
  let inflight: number | undefined;
  try {
    const state = JSON.parse(await fs.readFile(path.join(dir, 'state.json'), 'utf8')) as { acked: number; inflight?: number };
    acked = state.acked;
    inflight = state.inflight;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`spool ${kind}: unreadable state.json: ${(error as Error).message}`);
  }
  await fs.rm(path.join(dir, 'state.json.tmp'), { force: true });
  const names = (await fs.readdir(dir)).filter((n) => /^\d+\.seg$/.test(n)).sort();
  const segments: Segment[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    segments.push({ start: Number(name.slice(0, -4)), file, bytes: (await fs.stat(file)).size });
  }
  // Segments wholly acknowledged (the next one starts at or before `acked`) are left-overs of a
  // deletion cut short.
  while (segments.length > 1 && segments[1]!.start <= acked) await fs.rm(segments.shift()!.file, { force: true });
  let appended = segments.length === 0 ? acked : segments.at(-1)!.start;
  const last = segments.at(-1);
  if (last !== undefined) {
    const data = await fs.readFile(last.file);
    let offset = 0;
    let lines = 0;
    for (;;) {
      const nl = data.indexOf(NEWLINE, offset);
      if (nl < 0) break;
      try {
        JSON.parse(data.toString('utf8', offset, nl));
      } catch {
        break;
      }
      offset = nl + 1;
      lines++;
    }
    if (offset < data.length) {
      log.warn({ kind, file: last.file, keptLines: lines, droppedBytes: data.length - offset }, 'spool: cut a torn tail left by a crash (records never acknowledged to the collector)');
      await fs.truncate(last.file, offset);
      last.bytes = offset;
    }
    appended = last.start + lines;
  }
  // Without a state file, records before the first segment were acknowledged and deleted.
  if (segments.length > 0 && acked < segments[0]!.start) acked = segments[0]!.start;
  if (acked > appended) {
    // The data was cut below what the API acknowledged (a damaged disk?). What is left was all
    // acknowledged; start after `acked` so that no position, and so no idempotency key, is reused.
    log.error({ kind, acked, appended }, 'spool: acknowledged position beyond the data; starting after it');
    for (const segment of segments.splice(0)) await fs.rm(segment.file, { force: true });
    appended = acked;
  }
  if (inflight !== undefined && (inflight <= acked || inflight > appended)) inflight = undefined;
  let ackOffset = 0;
  if (segments.length > 0 && acked > segments[0]!.start) ackOffset = await offsetOfPosition(segments[0]!.file, acked - segments[0]!.start);
  return { kind, dir, segments, handle: undefined, appended, synced: appended, acked, inflight, ackOffset, queue: [], notify: [] };
}
