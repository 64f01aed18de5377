/**
 * Stream positions on MongoDB (Atlas, or FerretDB): one document per stream in `v2_streams` of the
 * records' database, on a client of its own. `_id` is "<battery_id>:<stream_id hex>"; the sequence is
 * 20 decimal digits (a u64 fits neither a double nor a signed long), so that a conditional update
 * ($lt on the text) never moves a position back. Bounded in time like the other stores; nothing
 * logged or thrown holds the URI's credentials.
 */
import type { Collection, Db } from 'mongodb';
import { MongoSideStore, type MongoSideStoreOptions } from '../../store/mongodb-side-store.js';
import { streamHex } from './wire.js';
import { sequenceText, type StreamPosition, type StreamPositions } from './stream-positions.js';

export const STREAM_POSITIONS_COLLECTION = 'v2_streams';

interface PositionDocument {
  _id: string;
  battery_id: string;
  stream_id: string;
  sequence: string;
}

const DUPLICATE_KEY = 11000;
const isDuplicateKey = (error: unknown) => (error as { code?: number }).code === DUPLICATE_KEY;

export class MongoStreamPositions extends MongoSideStore<Collection<PositionDocument>> implements StreamPositions {
  constructor(options: MongoSideStoreOptions) {
    super(options, 'battery-monitor-v2-streams', 'MongoDB stream positions');
  }

  protected async setUp(db: Db): Promise<Collection<PositionDocument>> {
    return db.collection<PositionDocument>(STREAM_POSITIONS_COLLECTION);
  }

  async get(batteryId: string, streamId: bigint): Promise<bigint> {
    const collection = await this.ready();
    const doc = await this.bounded(collection.findOne({ _id: idOf(batteryId, streamId) }), 'read');
    return doc === null ? 0n : BigInt(doc.sequence);
  }

  async save(positions: readonly StreamPosition[]): Promise<void> {
    if (positions.length === 0) return;
    const collection = await this.ready();
    for (const p of positions) {
      const sequence = sequenceText(p.sequence);
      const _id = idOf(p.batteryId, p.streamId);
      try {
        await this.bounded(
          collection.updateOne(
            { _id, sequence: { $lt: sequence } },
            { $set: { sequence }, $setOnInsert: { battery_id: p.batteryId, stream_id: streamHex(p.streamId) } },
            { upsert: true },
          ),
          'save',
          isDuplicateKey,
        );
      } catch (error) {
        // The saved position is not lower: the filter missed it and the upsert met its _id. Nothing to do.
        if (!isDuplicateKey(error)) throw error;
      }
    }
  }
}

const idOf = (batteryId: string, streamId: bigint) => `${batteryId}:${streamHex(streamId)}`;
