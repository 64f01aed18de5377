/**
 * A small edge protocol v2 device for the tests (docs/protocol.md), as the C++ client behaves: every
 * frame is queued until acknowledged; after a (re)connect and handshake it drops what the answer's
 * resume_after covers and sends the rest again, in order, each frame that does not follow the one
 * sent before it on the connection (or resume_after) flagged as skipping (FLAG_SKIPPED: after a
 * crash of the service, resume_after may lag behind the acks the device had). The queue lives in
 * memory: it stands for the device's on-disk ring, which outlives a crash of the service (not of
 * the device).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { ACK_BYTES, ANSWER_BYTES, encodeFrame, encodeHandshake, FLAG_SKIPPED, parseAck, parseAnswer, type Answer, type FrameContent } from '../../src/collector/v2/wire.js';

export const randomStreamId = (): bigint => randomBytes(8).readBigUInt64LE(0) | 1n;

export interface DeviceFrame {
  sequence: bigint;
  content: FrameContent;
}

export class V2Device {
  readonly batteryId: string;
  readonly streamId: bigint;
  /** Frames not yet acknowledged, in sequence order. */
  readonly unacked: DeviceFrame[] = [];
  /** Highest sequence acknowledged (by an ack or a handshake's resume_after). */
  acked = 0n;
  /** What the device could not make sense of (the tests expect none). */
  readonly errors: string[] = [];
  /** Answers of the handshakes so far. */
  readonly answers: Answer[] = [];
  #next = 1n;
  /** The last frame sent on this connection, or its resume_after. */
  #lastSent = 0n;
  #socket: net.Socket | undefined;
  #waiters: (() => void)[] = [];

  constructor(batteryId: string, streamId: bigint = randomStreamId()) {
    this.batteryId = batteryId;
    this.streamId = streamId;
  }

  get connected(): boolean {
    return this.#socket !== undefined && !this.#socket.destroyed;
  }

  /** The socket of the current connection (tests cut it, or read what it sends). */
  get socket(): net.Socket | undefined {
    return this.#socket;
  }

  /** Queues a frame (the next sequence) and sends it if connected; answers its sequence. */
  push(content: Omit<FrameContent, 'sequence'>): bigint {
    const sequence = this.#next++;
    const frame = { sequence, content: { ...content, sequence } };
    this.unacked.push(frame);
    if (this.connected && this.#ready) this.#send(frame);
    return sequence;
  }

  #send(frame: DeviceFrame): void {
    const flags = frame.sequence === this.#lastSent + 1n ? 0 : FLAG_SKIPPED;
    this.#lastSent = frame.sequence;
    this.#socket!.write(encodeFrame({ ...frame.content, flags }));
  }

  #ready = false;

  /**
   * Connects, handshakes, and sends what is queued past resume_after. Answers the handshake's
   * answer; rejects when the connection fails or no answer comes within `timeoutMs`.
   */
  async connect(port: number, timeoutMs = 10_000): Promise<Answer> {
    this.disconnect();
    const socket = net.connect({ host: '127.0.0.1', port });
    this.#socket = socket;
    this.#ready = false;
    socket.on('error', () => {});
    let received = Buffer.alloc(0);
    const answer = await new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('no handshake answer'));
      }, timeoutMs);
      socket.once('connect', () => socket.write(encodeHandshake(this.batteryId, this.streamId)));
      socket.once('close', () => {
        clearTimeout(timer);
        reject(new Error('closed before the handshake answer'));
      });
      const onData = (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (received.length < ANSWER_BYTES) return;
        clearTimeout(timer);
        socket.off('data', onData);
        const parsed = parseAnswer(received.subarray(0, ANSWER_BYTES));
        if (parsed === undefined) reject(new Error(`not an answer: ${received.toString('hex')}`));
        else resolve(parsed);
      };
      socket.on('data', onData);
    });
    this.answers.push(answer);
    if (answer.status !== 0) return answer;
    this.#acknowledged(answer.resumeAfter);
    let pending = received.subarray(ANSWER_BYTES);
    const onAcks = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      let at = 0;
      for (; pending.length - at >= ACK_BYTES; at += ACK_BYTES) {
        const sequence = parseAck(pending, at);
        if (sequence === undefined) {
          this.errors.push(`not an ack: ${pending.subarray(at, at + ACK_BYTES).toString('hex')}`);
          socket.destroy();
          return;
        }
        this.#acknowledged(sequence);
      }
      pending = pending.subarray(at);
    };
    socket.on('data', onAcks);
    if (pending.length > 0) onAcks(Buffer.alloc(0));
    this.#ready = true;
    this.#lastSent = answer.resumeAfter;
    for (const frame of this.unacked) this.#send(frame);
    return answer;
  }

  /** Resolves once everything queued so far is acknowledged; rejects after `timeoutMs`. */
  async allAcked(timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.unacked.length > 0) {
      if (Date.now() > until) throw new Error(`${this.unacked.length} frames not acknowledged (acked ${this.acked})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Closes the connection at once (what the device has not read is lost: a lost ack). */
  disconnect(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
    this.#ready = false;
  }

  #acknowledged(sequence: bigint): void {
    if (sequence > this.acked) this.acked = sequence;
    while (this.unacked.length > 0 && this.unacked[0]!.sequence <= sequence) this.unacked.shift();
    for (const wake of this.#waiters.splice(0)) wake();
  }
}
