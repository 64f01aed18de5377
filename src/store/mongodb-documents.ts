/**
 * The MongoDB document shape of a record, its mapper both ways, and the checks that keep anything
 * but typed values out of documents and filters.
 *
 * A document as this store writes it:
 *   { _id: ObjectId, timestamp: 1732700000.25, time: ISODate(...), battery_id: 'pack-1',
 *     source: 'battery_monitor', received_at: 1732700000.3, device_time?: 1234.5, key?: '...',
 *     pack_voltage: 398.2, ... }
 * `timestamp` stays the float Unix seconds the original service stored and every query uses;
 * `time` is the same instant as a BSON date (milliseconds, rounded down), which time-series
 * collections need as their time field and TTL indexes need to expire documents.
 *
 * The original service's documents lack battery_id, time, received_at and maybe source; they read
 * as battery_id "default", received_at = timestamp, the kind's default source.
 */
import { createHash } from 'node:crypto';
import { ObjectId, type Document, type Filter } from 'mongodb';
import {
  DEFAULT_BATTERY_ID,
  KINDS,
  fieldNames,
  isBatteryId,
  type KindName,
  type NewRecord,
  type StoredRecord,
} from '../records/kinds.js';

export const TIME_FIELD = 'time';

export interface RecordDocument extends Document {
  _id: ObjectId;
  timestamp: number;
  time: Date;
  battery_id: string;
  source: string;
  received_at: number;
  device_time?: number;
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

/** Dates reach ±8.64e15 ms; a timestamp past that cannot be a BSON date. */
const MAX_ABS_TIMESTAMP = 8.64e12;
const MAX_KEY_LENGTH = 1024;
const MAX_SOURCE_LENGTH = 256;

/**
 * A deterministic _id for an idempotency key: the first 12 bytes of its SHA-256. On a plain
 * collection the unique _id index then refuses a second copy, and the answer is the same id without
 * a read. 96 bits make an accidental collision negligible at any fleet size.
 */
export function idForKey(key: string): ObjectId {
  return new ObjectId(createHash('sha256').update(key).digest().subarray(0, 12));
}

export const dateOf = (timestamp: number) => new Date(Math.floor(timestamp * 1000));

export function toDocument(kind: KindName, record: NewRecord, id: ObjectId): RecordDocument {
  const doc: RecordDocument = {
    _id: id,
    timestamp: record.timestamp,
    [TIME_FIELD]: dateOf(record.timestamp),
    battery_id: record.battery_id,
    source: record.source,
    received_at: record.received_at,
  };
  if (record.device_time !== undefined) doc.device_time = record.device_time;
  if (record.key !== undefined) doc.key = record.key;
  for (const field of fieldNames(kind)) doc[field] = record.values[field];
  return doc;
}

/** The fields a read fetches: the record's own, never `time` or `key`. */
export function projectionFor(kind: KindName): Document {
  const projection: Document = { _id: 1, timestamp: 1, received_at: 1, source: 1, battery_id: 1, device_time: 1 };
  for (const field of fieldNames(kind)) projection[field] = 1;
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

export function fromDocument(kind: KindName, doc: Document): StoredRecord {
  const timestamp = numberOf(doc.timestamp) ?? numberOf(doc[TIME_FIELD]) ?? 0;
  const id = doc._id instanceof ObjectId ? doc._id.toHexString() : String(doc._id);
  const record: StoredRecord = {
    _id: id,
    timestamp,
    received_at: numberOf(doc.received_at) ?? timestamp,
    source: typeof doc.source === 'string' ? doc.source : KINDS[kind].defaultSource,
    battery_id: typeof doc.battery_id === 'string' ? doc.battery_id : DEFAULT_BATTERY_ID,
  };
  const deviceTime = numberOf(doc.device_time);
  if (deviceTime !== undefined) record.device_time = deviceTime;
  for (const field of fieldNames(kind)) {
    const value = numberOf(doc[field]);
    if (value !== undefined) record[field] = value;
  }
  return record;
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

export function finite(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name} must be a finite number`);
  return value;
}

/** Why a record cannot be stored, or undefined when it can. */
export function recordProblem(kind: KindName, record: NewRecord): string | undefined {
  if (record === null || typeof record !== 'object') return 'not a record';
  const { timestamp, received_at, battery_id, source, device_time, key, values } = record;
  if (typeof timestamp !== 'number' || !Number.isFinite(timestamp) || Math.abs(timestamp) > MAX_ABS_TIMESTAMP) {
    return 'timestamp must be finite Unix seconds';
  }
  if (typeof received_at !== 'number' || !Number.isFinite(received_at)) return 'received_at must be a finite number';
  if (typeof battery_id !== 'string' || !isBatteryId(battery_id)) return 'battery_id must be 1-64 of A-Z a-z 0-9 . _ : -';
  if (typeof source !== 'string' || source.length > MAX_SOURCE_LENGTH) return `source must be a string of at most ${MAX_SOURCE_LENGTH} characters`;
  if (device_time !== undefined && (typeof device_time !== 'number' || !Number.isFinite(device_time))) {
    return 'device_time must be a finite number';
  }
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH)) {
    return `key must be a string of 1-${MAX_KEY_LENGTH} characters`;
  }
  if (values === null || typeof values !== 'object') return 'values missing';
  for (const [field, spec] of Object.entries(KINDS[kind].fields)) {
    const value = values[field];
    if (typeof value !== 'number' || !Number.isFinite(value)) return `${field} must be a finite number`;
    if (spec.type === 'integer' && !Number.isInteger(value)) return `${field} must be an integer`;
  }
  return undefined;
}
