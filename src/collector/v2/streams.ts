/**
 * The v2 streams this process has open, and their positions: which connection holds each stream
 * (a new handshake for a stream closes the older connection, and waits until what that one submitted
 * has settled, so that the answer's resume_after is exact), the highest sequence acknowledged, and
 * its saving to the positions store, at most once a second per stream and when its connection ends.
 */
import type { CollectorLogger } from '../logger.js';
import { LogEvery } from '../log-every.js';
import type { StreamPositions } from './stream-positions.js';
import { streamHex, type Handshake } from './wire.js';

/** What the registry needs of a connection holding a stream. */
export interface StreamHolder {
  /** Closes the connection for a newer one of the same stream. */
  supersede(): void;
  /** Settles once everything the connection submitted is settled and acknowledged (or lost). */
  readonly settled: Promise<void>;
}

export interface Stream {
  readonly batteryId: string;
  readonly streamId: bigint;
  /** Highest sequence acknowledged (durable): in this process, or saved before. */
  acked: bigint;
  /** What the positions store holds (as far as this process knows). */
  saved: bigint;
  holder: StreamHolder | undefined;
  /** Handshakes of this stream, one after the other. */
  turn: Promise<unknown>;
  /** Handshakes waiting for their turn. */
  claims: number;
}

const SAVE_EVERY_MS = 1000;

export class Streams {
  readonly #positions: StreamPositions;
  readonly #log: CollectorLogger;
  readonly #streams = new Map<string, Stream>();
  readonly #saveFailures = new LogEvery(60_000);
  readonly #timer: NodeJS.Timeout;
  #saving: Promise<void> = Promise.resolve();

  constructor(positions: StreamPositions, log: CollectorLogger) {
    this.#positions = positions;
    this.#log = log;
    this.#timer = setInterval(() => void this.#save([...this.#streams.values()]), SAVE_EVERY_MS).unref();
  }

  /**
   * Makes `holder` the stream's connection and answers the stream with its resume_after (`acked`):
   * an older connection of the stream is closed first and its submissions awaited. Rejects with
   * StoreUnavailableError when the position cannot be read (the device is told to try later).
   */
  claim(handshake: Handshake, holder: StreamHolder): Promise<Stream> {
    const key = `${handshake.batteryId}:${streamHex(handshake.streamId)}`;
    let stream = this.#streams.get(key);
    if (stream === undefined) {
      stream = { batteryId: handshake.batteryId, streamId: handshake.streamId, acked: -1n, saved: 0n, holder: undefined, turn: Promise.resolve(), claims: 0 };
      this.#streams.set(key, stream);
    }
    const claimed = stream;
    claimed.claims++;
    const claim = claimed.turn.then(async () => {
      const older = claimed.holder;
      if (older !== undefined && older !== holder) {
        older.supersede();
        await older.settled;
      }
      if (claimed.acked < 0n) {
        claimed.saved = await this.#positions.get(claimed.batteryId, claimed.streamId);
        claimed.acked = claimed.saved;
      }
      claimed.holder = holder;
      return claimed;
    });
    claimed.turn = claim.catch(() => {}).finally(() => claimed.claims--);
    return claim;
  }

  /** Everything up to `sequence` is durable and acknowledged. */
  acked(stream: Stream, sequence: bigint): void {
    if (sequence > stream.acked) stream.acked = sequence;
  }

  /** The holder's connection ended and its submissions settled: the position is saved now, and the stream forgotten once nobody holds it. */
  async release(stream: Stream, holder: StreamHolder): Promise<void> {
    if (stream.holder !== holder) return;
    stream.holder = undefined;
    await this.#save([stream]);
    const key = `${stream.batteryId}:${streamHex(stream.streamId)}`;
    if (stream.holder === undefined && stream.claims === 0 && stream.saved === stream.acked && this.#streams.get(key) === stream) this.#streams.delete(key);
  }

  /** Saves what is left to save, and stops. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#save([...this.#streams.values()]);
  }

  /** One save at a time: a position is never written after a higher one of the same stream. */
  #save(streams: readonly Stream[]): Promise<void> {
    this.#saving = this.#saving.then(async () => {
      const due = streams.filter((stream) => stream.acked > stream.saved);
      if (due.length === 0) return;
      const positions = due.map((stream) => ({ batteryId: stream.batteryId, streamId: stream.streamId, sequence: stream.acked }));
      try {
        await this.#positions.save(positions);
        positions.forEach((position, i) => (due[i]!.saved = position.sequence));
      } catch (error) {
        // A lagging position costs frames sent again (their keys drop them), nothing more: tried again in a second.
        const failures = this.#saveFailures.count();
        if (failures !== undefined) this.#log.warn({ err: error, failures }, 'v2 stream positions not saved; devices may send some frames again after a restart');
      }
    });
    return this.#saving;
  }
}
