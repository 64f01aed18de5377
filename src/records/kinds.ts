/**
 * The record kinds: one table that names each kind's route, collection, fields and default source.
 * Routes, request/response schemas, store tables and tests are all generated from this table, so a
 * new field or kind is added here and nowhere else.
 */

export type FieldType = 'number' | 'integer';

export interface FieldSpec {
  readonly type: FieldType;
  readonly description: string;
  readonly example: number;
}

export interface KindSpec {
  /** URL segment: /api/{name}. */
  readonly name: KindName;
  /** MongoDB collection and SQLite table, as the original service named them. */
  readonly collection: string;
  readonly title: string;
  /** For messages: "Battery data stored successfully". */
  readonly label: string;
  readonly defaultSource: string;
  /** The kind's own measurement fields, all required on input. */
  readonly fields: Readonly<Record<string, FieldSpec>>;
}

export const KIND_NAMES = ['battery-data', 'battery-performance', 'battery-prediction'] as const;
export type KindName = (typeof KIND_NAMES)[number];

const packVoltage: FieldSpec = { type: 'number', description: 'Pack voltage in volts', example: 398.2 };
const packCurrent: FieldSpec = {
  type: 'number',
  description: 'Pack current in amperes (positive: charging, negative: discharging)',
  example: -12.5,
};
const cellTemp: FieldSpec = { type: 'number', description: 'Cell temperature in °C', example: 31.2 };

export const KINDS: Readonly<Record<KindName, KindSpec>> = {
  'battery-data': {
    name: 'battery-data',
    collection: 'battery_data',
    title: 'BatteryData',
    label: 'Battery data',
    defaultSource: 'battery_monitor',
    fields: { pack_voltage: packVoltage, pack_current: packCurrent, cell_temp: cellTemp },
  },
  'battery-performance': {
    name: 'battery-performance',
    collection: 'battery_performance',
    title: 'BatteryPerformance',
    label: 'Battery performance',
    defaultSource: 'battery_ai_predictor',
    fields: {
      pack_voltage: packVoltage,
      pack_current: packCurrent,
      cell_temp: cellTemp,
      capacity_remaining: { type: 'number', description: 'Remaining capacity in percent of nominal', example: 87.5 },
      cycle_count: { type: 'integer', description: 'Full charge/discharge cycles so far', example: 412 },
      age_months: { type: 'number', description: 'Pack age in months', example: 18 },
      health_score: { type: 'number', description: 'State of health, 0-100', example: 92.3 },
    },
  },
  'battery-prediction': {
    name: 'battery-prediction',
    collection: 'battery_predictions',
    title: 'BatteryPrediction',
    label: 'Battery prediction',
    defaultSource: 'battery_ai_predictor',
    fields: {
      remaining_life_hours: { type: 'number', description: 'Predicted remaining life in hours', example: 15000.5 },
      remaining_cycles: { type: 'number', description: 'Predicted remaining full cycles', example: 1200 },
      degradation_rate: { type: 'number', description: 'Capacity loss per 100 cycles, percent', example: 0.021 },
    },
  },
};

export const ALL_KINDS: readonly KindSpec[] = KIND_NAMES.map((name) => KINDS[name]);

export function fieldNames(kind: KindName): string[] {
  return Object.keys(KINDS[kind].fields);
}

export const DEFAULT_BATTERY_ID = 'default';
export const BATTERY_ID_PATTERN = '^[A-Za-z0-9._:-]{1,64}$';
const batteryIdRegExp = new RegExp(BATTERY_ID_PATTERN);
export const isBatteryId = (value: string): boolean => batteryIdRegExp.test(value);

/** A record as producers send it, after validation; server defaults not yet applied. */
export interface RecordInput {
  timestamp?: number;
  source?: string;
  battery_id?: string;
  /** Binary frames only: the float32 the device sent as its timestamp. */
  device_time?: number;
  [field: string]: number | string | undefined;
}

/** A record ready to store: every common field set, measurement fields by name. */
export interface NewRecord {
  timestamp: number;
  source: string;
  battery_id: string;
  received_at: number;
  device_time?: number;
  /** Idempotency key: a record with a key already stored is skipped, not stored twice. */
  key?: string;
  values: Record<string, number>;
}

/** A stored record, as the API answers it. */
export interface StoredRecord {
  _id: string;
  timestamp: number;
  source: string;
  battery_id: string;
  received_at: number;
  device_time?: number;
  [field: string]: number | string | undefined;
}

/** Fills in server defaults. The input must already be validated against the kind's schema. */
export function toNewRecord(kind: KindName, input: RecordInput, receivedAt: number, key?: string): NewRecord {
  const spec = KINDS[kind];
  const values: Record<string, number> = {};
  for (const field of Object.keys(spec.fields)) values[field] = input[field] as number;
  const record: NewRecord = {
    timestamp: input.timestamp ?? receivedAt,
    source: input.source ?? spec.defaultSource,
    battery_id: input.battery_id ?? DEFAULT_BATTERY_ID,
    received_at: receivedAt,
    values,
  };
  if (input.device_time !== undefined) record.device_time = input.device_time;
  if (key !== undefined) record.key = key;
  return record;
}

/**
 * Routes a JSON message from the TCP collector to its kind by its fields, as the original
 * collector did: capacity_remaining means performance, remaining_life_hours a prediction,
 * pack_voltage alone battery data.
 */
export function kindOfMessage(message: Record<string, unknown>): KindName | undefined {
  if ('capacity_remaining' in message) return 'battery-performance';
  if ('remaining_life_hours' in message) return 'battery-prediction';
  if ('pack_voltage' in message) return 'battery-data';
  return undefined;
}

/** The API shape of a record: common fields first, then the kind's fields. */
export function toStoredRecord(kind: KindName, record: NewRecord, id: string): StoredRecord {
  const stored: StoredRecord = {
    _id: id,
    timestamp: record.timestamp,
    received_at: record.received_at,
    source: record.source,
    battery_id: record.battery_id,
  };
  if (record.device_time !== undefined) stored.device_time = record.device_time;
  for (const field of Object.keys(KINDS[kind].fields)) stored[field] = record.values[field];
  return stored;
}
