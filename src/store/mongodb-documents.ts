/**
 * The MongoDB document shape of a record, its mapper both ways, and the checks that keep anything
 * but typed values out of documents and filters. A record's fields are checked by the API's own
 * validator (records/validate.ts) before it becomes a document: the store refuses exactly what a
 * POST is refused, with the same detail.
 *
 * A document as this store writes it: the record's fields as the kinds table lists them, the
 * time field, and the idempotency key when there is one:
 *   { _id: ObjectId, timestamp: 1732700000.25, time: ISODate(...), received_at: 1732700000.3,
 *     source: 'battery_monitor', battery_id: 'pack-1', device_time?: 1234.5, pack_voltage: 398.2,
 *     ..., cell_voltages?: [3.687, ...], cell_temps?: [...], cell_voltage_min?: 3.641, ..., key?: '...' }
 * A record's arrays (per-cell readings) are BSON arrays of doubles, and the numbers derived from them
 * plain fields, both only in documents of records that came with them.
 * `timestamp` stays the float Unix seconds the original service stored and every query uses;
 * `time` is the same instant as a BSON date (milliseconds, rounded down), which time-series
 * collections need as their time field and TTL indexes need to expire documents.
 *
 * The original service's documents lack battery_id, time, received_at and maybe source; they read
 * as battery_id "default", received_at = timestamp, the kind's default source.
 */
import { createHash } from 'node:crypto';
import { ObjectId, type Document, type Filter } from 'mongodb';
import type { RecordBatch } from '../ingest/record-batch.js';
import {
  DEFAULT_BATTERY_ID,
  inputFields,
  KINDS,
  recordFields,
  type FieldValue,
  type KindName,
  type RecordInput,
  type StoredRecord,
} from '../records/kinds.js';
import { schemaDetail, type ValidationDetail } from '../records/validate.js';

export const TIME_FIELD = 'time';

/** The fields this store's code reads by name; the record's fields are the kinds table's. */
export interface RecordDocument extends Document {
  _id: ObjectId;
  timestamp: number;
  time: Date;
  battery_id: string;
  key?: string;
}

export interface SummaryDocument extends Document {
  /** `${battery_id}/${kind}`: neither may contain a slash. */
  _id: string;
  battery_id: string;
  kind: KindName;
  count: number;
  last_seen: number;
}

export const summaryId = (batteryId: string, kind: KindName) => `${batteryId}/${kind}`;

/**
 * A deterministic _id for an idempotency key: the first 12 bytes of its SHA-256. On a plain
 * collection the unique _id index then refuses a second copy, and the answer is the same id without
 * a read. 96 bits make an accidental collision negligible at any fleet size.
 */
export function idForKey(key: string): ObjectId {
  return new ObjectId(createHash('sha256').update(key).digest().subarray(0, 12));
}

export const dateOf = (timestamp: number) => new Date(Math.floor(timestamp * 1000));

/** The document of row `row` of a batch. */
export function toDocument(batch: RecordBatch, row: number, id: ObjectId): RecordDocument {
  const doc = batch.record(row, '') as unknown as RecordDocument;
  doc._id = id;
  doc[TIME_FIELD] = dateOf(doc.timestamp);
  const key = batch.key(row);
  if (key !== undefined) doc.key = key;
  return doc;
}

const PROJECTIONS = new Map<KindName, Document>();

/** The fields a read fetches: the record's own, never `time` or `key`. */
export function projectionFor(kind: KindName): Document {
  let projection = PROJECTIONS.get(kind);
  if (projection === undefined) {
    projection = Object.fromEntries(recordFields(kind).map((field) => [field.name, 1]));
    PROJECTIONS.set(kind, projection);
  }
  return projection;
}

function numberOf(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (value instanceof Date) return value.getTime() / 1000;
  // Long, Decimal128, Double from documents other programs wrote.
  if (value !== null && typeof value === 'object' && 'toString' in value) {
    const n = Number(String(value));
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/** An array field as stored: numbers only (an array another program wrote with anything else reads as absent). */
function numbersOf(value: unknown): number[] | undefined {
  if (!Array.isArray(value) || value.length === 0) return undefined;
  const numbers: number[] = [];
  for (const item of value) {
    const n = numberOf(item);
    if (n === undefined || !Number.isFinite(n)) return undefined;
    numbers.push(n);
  }
  return numbers;
}

export function fromDocument(kind: KindName, doc: Document): StoredRecord {
  const record = {} as StoredRecord;
  for (const field of recordFields(kind)) {
    const stored = doc[field.name];
    let value: FieldValue | undefined;
    if (field.setBy === 'store') value = stored instanceof ObjectId ? stored.toHexString() : String(stored);
    else if (field.type === 'string') value = typeof stored === 'string' ? stored : undefined;
    else if (field.type === 'numbers') value = numbersOf(stored);
    else value = numberOf(stored);
    value ??= legacyValue(kind, field.name, record, doc);
    if (value !== undefined) record[field.name] = value;
  }
  return record;
}

/** How the original service's documents read where they lack a field (see the top of this file). */
function legacyValue(kind: KindName, name: string, record: StoredRecord, doc: Document): FieldValue | undefined {
  switch (name) {
    case 'timestamp':
      return numberOf(doc[TIME_FIELD]) ?? 0;
    case 'received_at':
      return record.timestamp;
    case 'source':
      return KINDS[kind].defaultSource;
    case 'battery_id':
      return DEFAULT_BATTERY_ID;
    default:
      return undefined;
  }
}

/**
 * The filter on battery_id. Only a string reaches it, so a value can never be an operator object.
 * "default" also matches documents without the field (the original service's), which the
 * (battery_id, timestamp) index serves: a missing field is indexed as null.
 */
export function batteryFilter(batteryId: unknown): Filter<Document> {
  if (batteryId === undefined) return {};
  if (typeof batteryId !== 'string') throw new TypeError('battery_id must be a string');
  return batteryId === DEFAULT_BATTERY_ID ? { battery_id: { $in: [DEFAULT_BATTERY_ID, null] } } : { battery_id: batteryId };
}

/**
 * The filter on a read's pack and source (RecordFilter). Strings only, as batteryFilter. The kind's
 * default source also matches documents without one (the original service's), which read as it.
 */
export function recordFilter(kind: KindName, filter: { batteryId?: unknown; source?: unknown }): Filter<Document> {
  const { source } = filter;
  if (source === undefined) return batteryFilter(filter.batteryId);
  if (typeof source !== 'string') throw new TypeError('source must be a string');
  return { ...batteryFilter(filter.batteryId), source: source === KINDS[kind].defaultSource ? { $in: [source, null] } : source };
}

export function finite(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name} must be a finite number`);
  return value;
}

/** What the API's validator finds wrong with a row (its 422 detail), nothing when it can be stored. */
export function recordDetail(batch: RecordBatch, row: number): ValidationDetail[] {
  // Only what a producer sends: the validator would have to delete the rest, at four times the cost.
  const input: RecordInput = {};
  for (const field of inputFields(batch.kind)) {
    const value = batch.value(row, field.name);
    if (value !== undefined) input[field.name] = value;
  }
  return schemaDetail(batch.kind, input);
}

/** Why a row cannot be stored, in one line, or undefined when it can. */
export function recordProblem(batch: RecordBatch, row: number): string | undefined {
  const detail = recordDetail(batch, row);
  return detail.length === 0 ? undefined : detail.map((entry) => `${entry.loc.join('.')}: ${entry.msg}`).join('; ');
}
