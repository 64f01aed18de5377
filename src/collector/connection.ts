/**
 * One TCP connection of the collector: its bytes cut into frames or messages, decoded into record
 * batches (one per read and kind) and handed on; its bad input counted per reason and logged once
 * per reason, with the peer. What it held at the end (a partial frame, an unfinished message) is
 * counted when it closes. A JSON message over 64 KiB closes the connection: no producer sends one,
 * and the bytes after it (perhaps an endless string) are not worth reading to find its end.
 */
import type net from 'node:net';
import { RecordBatch } from '../ingest/record-batch.js';
import type { KindName } from '../records/kinds.js';
import type { ClockBound } from '../records/validate.js';
import { arrivalSeconds, decodeFrame, FRAME_BYTES, FrameAssembler, type FrameSink } from './binary-decoder.js';
import { JsonDecoder, type MessageSink } from './json-decoder.js';
import type { ListenerCounters } from './listener-counters.js';
import type { CollectorLogger } from './logger.js';
import type { CloseReason, ListenerName, RejectReason } from './metrics.js';

export interface ConnectionContext {
  readonly counters: ListenerCounters;
  readonly log: CollectorLogger;
  readonly clock: ClockBound;
  /** Takes each batch decoded from a read. */
  readonly submit: (listener: ListenerName, batch: RecordBatch) => void;
}

export class Connection {
  readonly socket: net.Socket;
  readonly listener: ListenerName;
  readonly peer: string;
  readonly batteryId: string;
  closeReason: CloseReason = 'peer';
  /** Date.now() of the last read, or of the end of a pause the collector made. */
  lastActivity = Date.now();
  /** Settles once the socket closed and its leftovers were counted and handed on. */
  readonly finished: Promise<void>;
  readonly #context: ConnectionContext;
  readonly #rejected: Partial<Record<RejectReason, number>> = {};
  readonly #read: (chunk: Buffer) => void;
  readonly #end: () => void;
  #frames = 0;

  constructor(socket: net.Socket, listener: ListenerName, batteryId: string, context: ConnectionContext) {
    this.socket = socket;
    this.listener = listener;
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.batteryId = batteryId;
    this.#context = context;
    [this.#read, this.#end] = listener === 'binary' ? this.#binary() : this.#json();
    const { counters, log } = context;
    counters.open.inc();
    counters.total.inc();
    log.debug({ listener, peer: this.peer, battery_id: batteryId }, 'connection opened');
    socket.on('data', (chunk: Buffer) => {
      this.lastActivity = Date.now();
      counters.bytes.inc(chunk.length);
      const before = this.#frames;
      this.#read(chunk);
      if (this.#frames > before) counters.frames.inc(this.#frames - before);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (this.closeReason === 'peer') this.closeReason = 'error';
      log.debug({ listener, peer: this.peer, code: error.code }, 'connection error');
    });
    this.finished = new Promise((resolve) =>
      socket.once('close', () => {
        this.#finish();
        resolve();
      }),
    );
  }

  /** Binary frames: each read's good frames in one battery-data batch. */
  #binary(): [(chunk: Buffer) => void, () => void] {
    const assembler = new FrameAssembler();
    let batch: RecordBatch;
    let arrival = 0;
    const onFrame: FrameSink = (bytes, offset) => {
      this.#frames++;
      if (!decodeFrame(bytes, offset, arrival, this.batteryId, batch)) {
        this.#reject('non_finite', Buffer.from(bytes.buffer, bytes.byteOffset + offset, FRAME_BYTES).toString('hex'));
      }
    };
    const read = (chunk: Buffer) => {
      arrival = arrivalSeconds(this.lastActivity);
      batch = new RecordBatch('battery-data', Math.floor((assembler.pendingBytes + chunk.length) / FRAME_BYTES) || 1);
      assembler.push(chunk, onFrame);
      if (batch.length > 0) this.#context.submit(this.listener, batch);
    };
    const end = () => {
      const bytes = assembler.reset();
      if (bytes > 0) this.#reject('partial_frame', `${bytes} bytes`);
    };
    return [read, end];
  }

  /** JSON messages: each read's good records in one batch per kind; a message too large ends the connection. */
  #json(): [(chunk: Buffer) => void, () => void] {
    const decoder = new JsonDecoder(undefined, this.#context.clock);
    const batches = new Map<KindName, RecordBatch>();
    let arrival = 0;
    let tooLarge = false;
    const onMessage: MessageSink = (message) => {
      // What follows a message too large in the same read is dropped with the connection.
      if (tooLarge) return;
      this.#frames++;
      if (!message.ok) {
        this.#reject(message.reason, message.excerpt, message.detail);
        tooLarge = message.reason === 'too_large';
        return;
      }
      let batch = batches.get(message.kind);
      if (batch === undefined) {
        batch = new RecordBatch(message.kind);
        batches.set(message.kind, batch);
      }
      // The battery map names the pack of messages that do not name their own.
      message.record.battery_id ??= this.batteryId;
      batch.append(message.record, arrival);
    };
    const handOn = () => {
      for (const batch of batches.values()) this.#context.submit(this.listener, batch);
      batches.clear();
    };
    const read = (chunk: Buffer) => {
      arrival = arrivalSeconds(this.lastActivity);
      decoder.push(chunk, onMessage);
      // The records before it in this read are handed on like any others.
      handOn();
      if (tooLarge && !this.socket.destroyed) {
        this.closeReason = 'too_large';
        this.socket.destroy();
      }
    };
    const end = () => {
      if (tooLarge) return;
      const before = this.#frames;
      decoder.end(onMessage);
      if (this.#frames > before) this.#context.counters.frames.inc(this.#frames - before);
      handOn();
    };
    return [read, end];
  }

  #reject(reason: RejectReason, excerpt: string, detail?: unknown): void {
    this.#context.counters.rejected(reason).inc();
    const seen = this.#rejected[reason] ?? 0;
    this.#rejected[reason] = seen + 1;
    if (seen === 0) {
      this.#context.log.warn(
        { listener: this.listener, peer: this.peer, battery_id: this.batteryId, reason, excerpt, ...(detail === undefined ? {} : { detail }) },
        `bad input dropped (${reason}); further ones on this connection are counted, not logged`,
      );
    }
  }

  #finish(): void {
    this.#end();
    const { counters, log } = this.#context;
    counters.open.dec();
    counters.closed(this.closeReason).inc();
    const rejected = Object.keys(this.#rejected).length > 0;
    (rejected ? log.info : log.debug).call(
      log,
      { listener: this.listener, peer: this.peer, battery_id: this.batteryId, reason: this.closeReason, frames: this.#frames, rejected: this.#rejected },
      'connection closed',
    );
  }
}
