/**
 * Stream positions on MongoDB (Atlas, or FerretDB): one document per stream in `v2_streams` of the
 * records' database, on a client of its own. `_id` is "<battery_id>:<stream_id hex>"; the sequence is
 * 20 decimal digits (a u64 fits neither a double nor a signed long), so that a conditional update
 * ($lt on the text) never moves a position back. Bounded in time like the other stores; nothing
 * logged or thrown holds the URI's credentials.
 */
import { type Collection, type MongoClient } from 'mongodb';
import { maskMongoUri, redactor, sideClient } from '../../store/mongodb-uri.js';
import { StoreUnavailableError } from '../../store/store.js';
import { streamHex } from './wire.js';
import { sequenceText, type StreamPosition, type StreamPositions } from './stream-positions.js';
import { withDeadline } from '../../store/deadline.js';

export const STREAM_POSITIONS_COLLECTION = 'v2_streams';

interface PositionDocument {
  _id: string;
  battery_id: string;
  stream_id: string;
  sequence: string;
}

export interface MongoStreamPositionsOptions {
  uri: string;
  databaseName: string;
  operationTimeoutMs?: number;
}

const DUPLICATE_KEY = 11000;

export class MongoStreamPositions implements StreamPositions {
  readonly name = 'mongodb';
  readonly #client: MongoClient;
  readonly #databaseName: string;
  readonly #redact: (message: string) => string;
  readonly #where: string;
  readonly #operationTimeoutMs: number;
  #collection: Promise<Collection<PositionDocument>> | undefined;
  #closed = false;

  constructor(options: MongoStreamPositionsOptions) {
    this.#databaseName = options.databaseName;
    this.#redact = redactor(options.uri);
    this.#where = maskMongoUri(options.uri);
    this.#operationTimeoutMs = options.operationTimeoutMs ?? 10_000;
    this.#client = sideClient(options.uri, 'battery-monitor-v2-streams', 'MongoDB stream positions', 2500);
  }

  #ready(): Promise<Collection<PositionDocument>> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError('MongoDB stream positions are closed'));
    this.#collection ??= this.#bounded(
      this.#client.connect().then((client) => client.db(this.#databaseName).collection<PositionDocument>(STREAM_POSITIONS_COLLECTION)),
      'connect',
    ).catch((error: unknown) => {
      this.#collection = undefined;
      throw error;
    });
    return this.#collection;
  }

  async get(batteryId: string, streamId: bigint): Promise<bigint> {
    const collection = await this.#ready();
    const doc = await this.#bounded(collection.findOne({ _id: idOf(batteryId, streamId) }), 'read');
    return doc === null ? 0n : BigInt(doc.sequence);
  }

  async save(positions: readonly StreamPosition[]): Promise<void> {
    if (positions.length === 0) return;
    const collection = await this.#ready();
    for (const p of positions) {
      const sequence = sequenceText(p.sequence);
      const _id = idOf(p.batteryId, p.streamId);
      try {
        await this.#bounded(
          collection.updateOne(
            { _id, sequence: { $lt: sequence } },
            { $set: { sequence }, $setOnInsert: { battery_id: p.batteryId, stream_id: streamHex(p.streamId) } },
            { upsert: true },
          ),
          'save',
        );
      } catch (error) {
        // The saved position is not lower: the filter missed it and the upsert met its _id. Nothing to do.
        if ((error as { code?: number }).code !== DUPLICATE_KEY) throw error;
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#client.close();
  }

  /** Bounds an operation in time; driver errors become store errors, secrets removed (a duplicate key passes as it is). */
  #bounded<T>(operation: Promise<T>, what: string): Promise<T> {
    const ms = this.#operationTimeoutMs;
    return withDeadline(operation, ms, () => new StoreUnavailableError(`MongoDB stream positions: ${what} got no answer within ${ms} ms`))
      .catch((error: unknown) => {
        if (error instanceof StoreUnavailableError || (error as { code?: number }).code === DUPLICATE_KEY) throw error;
        const message = this.#redact(String((error as Error)?.message ?? error));
        if (!this.#closed && (error as Error)?.name === 'MongoServerError') throw new Error(`MongoDB stream positions: ${message}`);
        throw new StoreUnavailableError(`MongoDB stream positions unavailable at ${this.#where}: ${message}`);
      });
  }
}

const idOf = (batteryId: string, streamId: bigint) => `${batteryId}:${streamHex(streamId)}`;
