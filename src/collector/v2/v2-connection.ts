/**
 * One connection of the v2 listener (docs/protocol.md): the handshake, then frames. Each read's good
 * frames become one record batch per kind, with the idempotency key of their (pack, stream,
 * sequence); once a read's batches are durable, one cumulative ack names its highest sequence.
 * Acks go out in order, so an ack never covers a frame that is not durable. A frame the store
 * refused for good, or that no record can come from (a reserved type, a non-finite number), is
 * counted and acknowledged like the others: sending it again would not help.
 *
 * A frame that fails its CRC, has a length out of range or a payload of the wrong size for its type,
 * a sequence not above the previous one, or a gap in the sequence that the device did not flag as
 * its own skip (FLAG_SKIPPED) closes the connection: nothing of it is stored, the frames before it
 * are acknowledged once durable, and the device resumes after reconnecting. The gap rule is what
 * tells a frame lost on the way (a middlebox that removed it) from readings the device dropped:
 * without it the frames around a lost one would be stored and acknowledged past it.
 */
import type net from 'node:net';
import { RecordBatch } from '../../ingest/record-batch.js';
import type { KindName } from '../../records/kinds.js';
import { arrivalSeconds } from '../binary-decoder.js';
import type { ListenerCounters } from '../listener-counters.js';
import type { CollectorLogger } from '../logger.js';
import type { CloseReason, CollectorMetrics, RejectReason } from '../metrics.js';
import type { Stream, Streams } from './streams.js';
import { decodeFrame, encodeAck, encodeAnswer, FrameReader, HandshakeStatus, MAX_HANDSHAKE_BYTES, parseHandshake, plausibleTime, recordKey, streamHex } from './wire.js';

export interface V2Context {
  readonly counters: ListenerCounters;
  readonly metrics: Pick<CollectorMetrics, 'v2ClockSkewed' | 'v2Acks'>;
  readonly log: CollectorLogger;
  readonly streams: Streams;
  readonly maxClockSkewSeconds: number;
  /** The handshake must be complete this long after the connection opened; 0 never. */
  readonly handshakeTimeoutMs: number;
  /**
   * Hands a batch to the sink; resolves true once it is durable or its records were refused for
   * good (counted), false when it was lost (the store failed while the collector closed).
   */
  readonly submit: (batch: RecordBatch) => Promise<boolean>;
  /** True while the collector holds reading back (the sink is full). */
  readonly paused: () => boolean;
}

type State = 'handshake' | 'answering' | 'frames' | 'closing';

export class V2Connection {
  readonly socket: net.Socket;
  readonly listener = 'v2' as const;
  readonly peer: string;
  closeReason: CloseReason = 'peer';
  lastActivity = Date.now();
  /** Settles once the socket closed and its leftovers were counted. */
  readonly finished: Promise<void>;
  /** Settles once everything it submitted is settled and acknowledged, and its stream is released. */
  readonly settled: Promise<void>;
  readonly #context: V2Context;
  readonly #reader = new FrameReader();
  readonly #rejected: Partial<Record<RejectReason, number>> = {};
  #state: State = 'handshake';
  #handshakeBytes: Buffer = Buffer.alloc(0);
  /** Bytes after the handshake, read before it was answered. */
  #early: Buffer[] = [];
  #stream: Stream | undefined;
  /** Highest sequence read on this connection (0: none yet). */
  #lastSequence = 0n;
  /** The handshake's answer: every sequence up to it is durable. */
  #resumeAfter = 0n;
  /** The acks, one after the other. */
  #acks: Promise<void> = Promise.resolve();
  #frames = 0;
  /** A batch was lost: nothing after it is acknowledged. */
  #lost = false;
  #handshakeTimer: NodeJS.Timeout | undefined;

  constructor(socket: net.Socket, context: V2Context) {
    this.socket = socket;
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.#context = context;
    const { counters, log } = context;
    counters.open.inc();
    counters.total.inc();
    log.debug({ listener: this.listener, peer: this.peer }, 'connection opened');
    if (context.handshakeTimeoutMs > 0) {
      this.#handshakeTimer = setTimeout(() => {
        if (this.#state !== 'handshake') return;
        this.closeReason = 'first_byte_timeout';
        this.socket.destroy();
      }, context.handshakeTimeoutMs).unref();
    }
    socket.on('data', (chunk: Buffer) => {
      this.lastActivity = Date.now();
      counters.bytes.inc(chunk.length);
      if (this.#state === 'handshake') this.#readHandshake(chunk);
      else if (this.#state === 'frames') this.#readFrames(chunk);
      // Paused, but the collector may resume every socket when the sink drains: kept for after the answer.
      else if (this.#state === 'answering') this.#early.push(chunk);
      // 'closing': what comes after an error is not read.
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (this.closeReason === 'peer') this.closeReason = 'error';
      log.debug({ listener: this.listener, peer: this.peer, code: error.code }, 'connection error');
    });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    this.finished = closed.then(() => this.#finish());
    // After the close, the acks still owed settle (the sink answers every batch, at the latest when the collector closes).
    this.settled = this.finished.then(async () => {
      await this.#acks;
      if (this.#stream !== undefined) await context.streams.release(this.#stream, this);
    });
  }

  /** A newer connection of the same stream took over. */
  supersede(): void {
    this.#context.log.info({ listener: this.listener, peer: this.peer, ...this.#ids() }, 'v2 stream reconnected elsewhere: closing its older connection');
    this.closeReason = 'peer';
    this.socket.destroy();
  }

  #readHandshake(chunk: Buffer): void {
    this.#handshakeBytes = Buffer.concat([this.#handshakeBytes, chunk]);
    const parsed = parseHandshake(this.#handshakeBytes);
    if (!parsed.done) return;
    clearTimeout(this.#handshakeTimer);
    if (!parsed.ok) {
      this.#reject('bad_handshake', this.#handshakeBytes.subarray(0, MAX_HANDSHAKE_BYTES).toString('hex'), parsed.why);
      this.#refuse(parsed.status);
      return;
    }
    // No frame is read before the answer.
    this.#state = 'answering';
    this.socket.pause();
    this.#early = [this.#handshakeBytes.subarray(parsed.bytes)];
    this.#handshakeBytes = Buffer.alloc(0);
    this.#context.streams.claim(parsed.handshake, this).then(
      (stream) => {
        if (this.socket.destroyed) {
          // Gone while waiting (or superseded already): the stream is released with it.
          this.#stream = stream;
          return;
        }
        this.#stream = stream;
        this.#lastSequence = 0n;
        this.#resumeAfter = stream.acked;
        this.socket.write(encodeAnswer(HandshakeStatus.ok, stream.acked));
        this.#context.log.debug({ listener: this.listener, peer: this.peer, ...this.#ids(), resume_after: String(stream.acked) }, 'v2 stream resumed');
        this.#state = 'frames';
        const early = Buffer.concat(this.#early);
        this.#early = [];
        if (early.length > 0) this.#readFrames(early);
        if (!this.#context.paused() && this.#state === 'frames') this.socket.resume();
      },
      (error: unknown) => {
        this.#context.log.warn({ listener: this.listener, peer: this.peer, err: error }, 'v2 handshake answered busy: the stream position could not be read');
        this.#refuse(HandshakeStatus.busy);
      },
    );
  }

  /** Answers a handshake with a status other than ok, and closes. */
  #refuse(status: HandshakeStatus): void {
    this.#state = 'closing';
    this.closeReason = 'error';
    if (!this.socket.destroyed) this.socket.end(encodeAnswer(status));
    // A peer that does not close its side in time is cut.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  #readFrames(chunk: Buffer): void {
    const stream = this.#stream!;
    const arrival = arrivalSeconds(this.lastActivity);
    const { metrics, maxClockSkewSeconds } = this.#context;
    const batches = new Map<KindName, RecordBatch>();
    const before = this.#lastSequence;
    let fatal: { reason: RejectReason; why: string; excerpt: string } | undefined;
    const intact = this.#reader.push(chunk, (frame) => {
      this.#frames++;
      const decoded = decodeFrame(frame);
      if (!decoded.ok && decoded.fatal) {
        fatal = { reason: decoded.reason === 'bad_crc' ? 'bad_crc' : 'invalid_record', why: decoded.why, excerpt: frame.subarray(0, 32).toString('hex') };
        return false;
      }
      if (decoded.sequence <= this.#lastSequence) {
        fatal = { reason: 'invalid_record', why: `sequence ${decoded.sequence} after ${this.#lastSequence}`, excerpt: frame.subarray(0, 32).toString('hex') };
        return false;
      }
      // The next sequence not yet durable; a frame at or below resume_after is one sent again (its key drops it).
      const next = (this.#lastSequence > this.#resumeAfter ? this.#lastSequence : this.#resumeAfter) + 1n;
      if (decoded.sequence > next && !decoded.skipped) {
        fatal = {
          reason: 'invalid_record',
          why: `sequence ${decoded.sequence} where ${next} was due, without the skipped flag: a frame lost on the way`,
          excerpt: frame.subarray(0, 32).toString('hex'),
        };
        return false;
      }
      this.#lastSequence = decoded.sequence;
      if (!decoded.ok) {
        this.#reject(decoded.reason, frame.subarray(0, 32).toString('hex'), `sequence ${decoded.sequence}: ${decoded.why}`);
        return true;
      }
      if (Math.abs(decoded.timestamp - arrival) > maxClockSkewSeconds) metrics.v2ClockSkewed.inc();
      const { record } = decoded;
      record.timestamp = plausibleTime(decoded.timestamp, arrival, maxClockSkewSeconds);
      record.battery_id = stream.batteryId;
      let batch = batches.get(decoded.kind);
      if (batch === undefined) batches.set(decoded.kind, (batch = new RecordBatch(decoded.kind)));
      batch.append(record, arrival, recordKey(stream.batteryId, stream.streamId, decoded.sequence));
      return true;
    });
    if (!intact) fatal = { reason: 'invalid_record', why: 'frame length out of range', excerpt: chunk.subarray(0, 32).toString('hex') };
    if (this.#frames > 0) this.#context.counters.frames.inc(this.#frames);
    this.#frames = 0;
    if (this.#lastSequence > before) this.#acknowledge([...batches.values()].map((batch) => this.#context.submit(batch)), this.#lastSequence);
    if (fatal !== undefined) {
      this.#state = 'closing';
      this.closeReason = 'error';
      this.#reject(fatal.reason, fatal.excerpt, fatal.why);
      this.socket.pause();
      // The frames before it are acknowledged once durable, then the connection closes.
      void this.#acks.then(() => this.socket.destroy());
    }
  }

  /** Once `submitted` are durable, and every ack before, acknowledges up to `sequence`. */
  #acknowledge(submitted: Promise<boolean>[], sequence: bigint): void {
    const durable = Promise.all(submitted).then((outcomes) => outcomes.every(Boolean));
    this.#acks = this.#acks.then(async () => {
      if (!(await durable) || this.#lost) {
        // Lost (the store failed as the collector closed): no ack for it or after it; the device sends them again.
        this.#lost = true;
        this.socket.destroy();
        return;
      }
      this.#context.streams.acked(this.#stream!, sequence);
      if (!this.socket.destroyed && this.socket.writable) {
        this.socket.write(encodeAck(sequence));
        this.#context.metrics.v2Acks.inc();
      }
    });
  }

  #ids(): Record<string, string> {
    return this.#stream === undefined ? {} : { battery_id: this.#stream.batteryId, stream_id: streamHex(this.#stream.streamId) };
  }

  #reject(reason: RejectReason, excerpt: string, detail?: string): void {
    this.#context.counters.rejected(reason).inc();
    const seen = this.#rejected[reason] ?? 0;
    this.#rejected[reason] = seen + 1;
    if (seen === 0) {
      this.#context.log.warn(
        { listener: this.listener, peer: this.peer, ...this.#ids(), reason, excerpt, ...(detail === undefined ? {} : { detail }) },
        `bad input dropped (${reason}); further ones on this connection are counted, not logged`,
      );
    }
  }

  #finish(): void {
    clearTimeout(this.#handshakeTimer);
    if (this.#state === 'frames' && this.#reader.pendingBytes > 0) this.#reject('partial_frame', `${this.#reader.pendingBytes} bytes`);
    const { counters, log } = this.#context;
    counters.open.dec();
    counters.closed(this.closeReason).inc();
    const rejected = Object.keys(this.#rejected).length > 0;
    (rejected ? log.info : log.debug).call(
      log,
      { listener: this.listener, peer: this.peer, ...this.#ids(), reason: this.closeReason, last_sequence: String(this.#lastSequence), rejected: this.#rejected },
      'connection closed',
    );
  }
}
