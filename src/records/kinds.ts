/**
 * The record kinds: one table that names every field of every record, the common ones and each
 * kind's own (its measurements; optional arrays such as per-cell readings; numbers the server derives
 * from those arrays), with its type, meaning and example, who sets it, and the flags that set kinds apart.
 * Everything else is derived from it: the request and answer schemas (schemas.ts), the columnar
 * layout (columns.ts), the SQLite tables, the MongoDB documents and their validation, the CSV
 * columns, the spool's lines and the web's types (scripts read KINDS). A new field or kind is
 * added here and nowhere else.
 *
 * This module imports nothing and does nothing when imported, so a plain script can read it.
 */

/** `numbers`: an array of finite numbers (per-cell readings). */
export type FieldType = 'number' | 'integer' | 'string' | 'numbers';

export interface FieldSpec {
  readonly type: FieldType;
  readonly description: string;
  readonly example: number | string | readonly number[];
  /** A regular expression the value matches, in input and in stored records alike. */
  readonly pattern?: string;
}

/** The most values one array field holds: a pack of up to 1,024 cells in series. */
export const MAX_ARRAY_ITEMS = 1024;

/**
 * An optional array of numbers a producer may send (per-cell readings). A record without it is
 * stored and answered exactly as before arrays existed; an empty array counts as absent.
 */
export interface ArrayFieldSpec extends FieldSpec {
  readonly type: 'numbers';
  readonly example: readonly number[];
  readonly maxItems: number;
}

/** How a derived number is computed from the values of an array: the smallest, the largest, or max minus min. */
export type Reduction = 'min' | 'max' | 'range';

/**
 * A number the server computes from an array field (`from`) when a record carries it, and stores with
 * the record, aggregatable like a measurement. Never taken from a producer: it is no input field, so a
 * value sent for it is ignored like any unknown field.
 */
export interface DerivedFieldSpec extends FieldSpec {
  readonly type: 'number';
  readonly example: number;
  readonly from: string;
  readonly reduce: Reduction;
}

/**
 * Who sets a common field: a producer (optionally: the server fills in a default when it is
 * missing), the server when it takes the record, or the store when it writes it (its key, which is
 * no column of a record batch).
 */
export type SetBy = 'producer' | 'server' | 'store';

export interface CommonFieldSpec extends FieldSpec {
  readonly setBy: SetBy;
  /**
   * Carried only by kinds whose readings have a device clock (KindSpec.deviceTime), and only by the
   * records that came with one: optional in stored records too.
   */
  readonly deviceClock?: true;
}

export const DEFAULT_BATTERY_ID = 'default';
export const BATTERY_ID_PATTERN = '^[A-Za-z0-9._:-]{1,64}$';

/** The fields every record carries, in the order the API answers them (CSV columns alike). */
export const COMMON_FIELDS = {
  _id: { type: 'string', setBy: 'store', description: 'Record id', example: '42' },
  timestamp: { type: 'number', setBy: 'producer', description: 'Unix seconds (float) of the reading', example: 1732700000.5 },
  received_at: { type: 'number', setBy: 'server', description: 'Unix seconds (float) when the server stored it', example: 1732700000.61 },
  // The example stands for each kind's own default source (KindSpec.defaultSource) in its schemas.
  source: { type: 'string', setBy: 'producer', description: 'Producer name', example: 'battery_monitor' },
  battery_id: {
    type: 'string',
    setBy: 'producer',
    description: 'Pack identifier: 1-64 of A-Z a-z 0-9 . _ : -',
    example: 'pack-1',
    pattern: BATTERY_ID_PATTERN,
  },
  device_time: {
    type: 'number',
    setBy: 'producer',
    deviceClock: true,
    description: 'The device clock value a binary frame carried (seconds, often since device start)',
    example: 1234.5,
  },
} as const satisfies Readonly<Record<string, CommonFieldSpec>>;

export type CommonFieldName = keyof typeof COMMON_FIELDS;

export interface KindSpec {
  /** URL segment: /api/{name}. */
  readonly name: KindName;
  /** MongoDB collection and SQLite table, as the original service named them. */
  readonly collection: string;
  readonly title: string;
  /** For messages: "Battery data stored successfully". */
  readonly label: string;
  readonly defaultSource: string;
  /** Readings carry the device's own clock as device_time (binary frames do). */
  readonly deviceTime: boolean;
  /** The field that routes a JSON message on the TCP collector to this kind (kindOfMessage). */
  readonly routingField: string;
  /** The key of this kind's newest record in GET /api/dashboard, as the original service named it. */
  readonly dashboardKey: string;
  /** The kind's own measurement fields, all required on input. */
  readonly fields: Readonly<Record<string, FieldSpec & { readonly type: 'number' | 'integer'; readonly example: number }>>;
  /** Optional arrays a producer may send beside the measurements. */
  readonly arrays?: Readonly<Record<string, ArrayFieldSpec>>;
  /** Numbers the server derives from the arrays, present exactly when their array is. */
  readonly derived?: Readonly<Record<string, DerivedFieldSpec>>;
}

export const KIND_NAMES = ['battery-data', 'battery-performance', 'battery-prediction'] as const;
export type KindName = (typeof KIND_NAMES)[number];

const packVoltage = { type: 'number', description: 'Pack voltage in volts', example: 398.2 } as const;
const packCurrent = {
  type: 'number',
  description: 'Pack current in amperes (positive: charging, negative: discharging)',
  example: -12.5,
} as const;
const cellTemp = { type: 'number', description: 'Cell temperature in °C', example: 31.2 } as const;
const cellArray = (description: string, example: readonly number[]) =>
  ({
    type: 'numbers',
    description: `${description}; at most ${MAX_ARRAY_ITEMS} values, each finite. Optional: an empty array is taken as absent`,
    example,
    maxItems: MAX_ARRAY_ITEMS,
  }) as const;
const derivedFrom = (from: string, reduce: Reduction, description: string, example: number) =>
  ({ type: 'number', description: `${description}; computed by the server, present when ${from} is (a value sent is ignored)`, example, from, reduce }) as const;

export const KINDS: Readonly<Record<KindName, KindSpec>> = {
  'battery-data': {
    name: 'battery-data',
    collection: 'battery_data',
    title: 'BatteryData',
    label: 'Battery data',
    defaultSource: 'battery_monitor',
    deviceTime: true,
    routingField: 'pack_voltage',
    dashboardKey: 'battery_data',
    fields: { pack_voltage: packVoltage, pack_current: packCurrent, cell_temp: cellTemp },
    arrays: {
      cell_voltages: cellArray('Voltage of each cell in series, in volts, in the pack\'s cell order', [3.687, 3.692, 3.688, 3.641]),
      cell_temps: cellArray('Temperature of each cell (or cell sensor) in °C', [31.2, 31.9, 32.4]),
    },
    derived: {
      cell_voltage_min: derivedFrom('cell_voltages', 'min', 'Lowest cell voltage in volts', 3.641),
      cell_voltage_max: derivedFrom('cell_voltages', 'max', 'Highest cell voltage in volts', 3.692),
      cell_voltage_delta: derivedFrom('cell_voltages', 'range', 'Highest minus lowest cell voltage in volts (cell imbalance)', 0.051),
      cell_temp_max: derivedFrom('cell_temps', 'max', 'Highest cell temperature in °C', 32.4),
    },
  },
  'battery-performance': {
    name: 'battery-performance',
    collection: 'battery_performance',
    title: 'BatteryPerformance',
    label: 'Battery performance',
    defaultSource: 'battery_ai_predictor',
    deviceTime: false,
    routingField: 'capacity_remaining',
    dashboardKey: 'performance',
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
    deviceTime: false,
    routingField: 'remaining_life_hours',
    dashboardKey: 'prediction',
    fields: {
      remaining_life_hours: { type: 'number', description: 'Predicted remaining life in hours', example: 15000.5 },
      remaining_cycles: { type: 'number', description: 'Predicted remaining full cycles', example: 1200 },
      degradation_rate: { type: 'number', description: 'Capacity loss per 100 cycles, percent', example: 0.021 },
    },
  },
};

export const ALL_KINDS: readonly KindSpec[] = KIND_NAMES.map((name) => KINDS[name]);

/** One field of a kind's records, common or its own, with what the table says about it. */
export interface RecordField extends FieldSpec {
  readonly name: string;
  readonly setBy: SetBy;
  /**
   * One of the kind's own measurements: a number, required on input. The common fields a producer
   * sends are optional, and so are the kind's arrays.
   */
  readonly measurement: boolean;
  /** In every stored record; else only in those that came with it (device_time, the arrays and what is derived from them). */
  readonly alwaysStored: boolean;
  /** A number of the kind's own that aggregates answer: a measurement, or a number derived by the server. */
  readonly aggregated: boolean;
  /** Arrays only: the most values it may hold. */
  readonly maxItems?: number;
  /** Derived numbers only: computed by the server from this array field, this way. */
  readonly derive?: { readonly from: string; readonly reduce: Reduction };
}

function recordFieldsOf(kind: KindSpec): readonly RecordField[] {
  const common: RecordField[] = [];
  for (const [name, spec] of Object.entries(COMMON_FIELDS) as [CommonFieldName, CommonFieldSpec][]) {
    if (spec.deviceClock && !kind.deviceTime) continue;
    const { deviceClock, ...field } = spec;
    const example = name === 'source' ? kind.defaultSource : field.example;
    common.push({ ...field, name, example, measurement: false, alwaysStored: deviceClock !== true, aggregated: false });
  }
  const own = Object.entries(kind.fields).map(
    ([name, field]): RecordField => ({ ...field, name, setBy: 'producer', measurement: true, alwaysStored: true, aggregated: true }),
  );
  const arrays = Object.entries(kind.arrays ?? {}).map(
    ([name, field]): RecordField => ({ ...field, name, setBy: 'producer', measurement: false, alwaysStored: false, aggregated: false }),
  );
  const derived = Object.entries(kind.derived ?? {}).map(
    ([name, { from, reduce, ...field }]): RecordField => ({
      ...field,
      name,
      setBy: 'server',
      measurement: false,
      alwaysStored: false,
      aggregated: true,
      derive: { from, reduce },
    }),
  );
  return [...common, ...own, ...arrays, ...derived];
}

/** A table with one entry per kind, each derived from the kind's spec. */
export function byKind<T>(derive: (kind: KindSpec) => T): Record<KindName, T> {
  return Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, derive(kind)])) as Record<KindName, T>;
}

const RECORD_FIELDS = byKind(recordFieldsOf);

/** Every field of a kind's stored records, in the order the API answers them. */
export const recordFields = (kind: KindName): readonly RecordField[] => RECORD_FIELDS[kind];

const CSV_COLUMNS = byKind((kind) => RECORD_FIELDS[kind.name].map((field) => field.name));

/** The header of a CSV export: every field of the kind's records, in the order the API answers them. */
export const csvColumns = (kind: KindName): readonly string[] => CSV_COLUMNS[kind];

const INPUT_FIELDS = byKind((kind) => RECORD_FIELDS[kind.name].filter((field) => field.setBy === 'producer'));

/** The fields a producer sends for a kind, in the order of the API's input (the spool's lines alike). */
export const inputFields = (kind: KindName): readonly RecordField[] => INPUT_FIELDS[kind];

const AGGREGATED_FIELDS = byKind((kind) => RECORD_FIELDS[kind.name].filter((field) => field.aggregated));

/**
 * The numbers of a kind's own that aggregates and rollups carry: its measurements, then what the
 * server derives. Those that are not alwaysStored are counted apart: a bucket's mean of one is over the
 * records that have it, and a bucket with none of them leaves it out.
 */
export const aggregatedFields = (kind: KindName): readonly RecordField[] => AGGREGATED_FIELDS[kind];

const ARRAY_FIELDS = byKind((kind) => RECORD_FIELDS[kind.name].filter((field) => field.type === 'numbers'));

/** A kind's optional array fields (per-cell readings), in the table's order; none for most kinds. */
export const arrayFields = (kind: KindName): readonly RecordField[] => ARRAY_FIELDS[kind];

const REDUCE: Record<Reduction, (values: readonly number[]) => number> = {
  min: (values) => minOf(values),
  max: (values) => maxOf(values),
  range: (values) => maxOf(values) - minOf(values),
};

function minOf(values: readonly number[]): number {
  let min = Infinity;
  for (const value of values) if (value < min) min = value;
  return min;
}

function maxOf(values: readonly number[]): number {
  let max = -Infinity;
  for (const value of values) if (value > max) max = value;
  return max;
}

/** A derived field's value from its array's values (at least one, all finite, as validation ensures). */
export function deriveValue(field: RecordField, values: readonly number[]): number {
  return REDUCE[field.derive!.reduce](values);
}

const batteryIdRegExp = new RegExp(BATTERY_ID_PATTERN);
export const isBatteryId = (value: string): boolean => batteryIdRegExp.test(value);

/** A record as producers send it, after validation; server defaults not yet applied. */
export interface RecordInput {
  timestamp?: number;
  source?: string;
  battery_id?: string;
  /** Kinds with a device clock only: the float32 the device sent as its timestamp. */
  device_time?: number;
  [field: string]: FieldValue | undefined;
}

/** What a field of a record holds: a number, a string, or (array fields) numbers. */
export type FieldValue = number | string | readonly number[];

/** A stored record, as the API answers it. */
export interface StoredRecord {
  _id: string;
  timestamp: number;
  source: string;
  battery_id: string;
  received_at: number;
  device_time?: number;
  [field: string]: FieldValue | undefined;
}

/**
 * Kinds in the order their routing fields are tried: a field that several kinds carry (a
 * performance record has a pack_voltage too) decides only when no field of one kind alone is there.
 */
const ROUTING_ORDER: readonly KindSpec[] = [...ALL_KINDS].sort(
  (a, b) => carriersOf(a.routingField) - carriersOf(b.routingField),
);

function carriersOf(field: string): number {
  return ALL_KINDS.filter((kind) => field in kind.fields).length;
}

/**
 * Routes a JSON message from the TCP collector to its kind by its fields, as the original
 * collector did: capacity_remaining means performance, remaining_life_hours a prediction,
 * pack_voltage alone battery data.
 */
export function kindOfMessage(message: Record<string, unknown>): KindName | undefined {
  for (const kind of ROUTING_ORDER) if (kind.routingField in message) return kind.name;
  return undefined;
}
