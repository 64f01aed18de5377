/**
 * JSON schemas (TypeBox) generated from the kinds table. The same schemas validate HTTP bodies,
 * TCP JSON messages and the records a MongoDB store writes, and document the API in OpenAPI.
 */
import { Type, type TObject, type TSchema } from 'typebox';
import {
  ALL_KINDS,
  COMMON_FIELDS,
  DEFAULT_BATTERY_ID,
  inputFields,
  recordFields,
  type CommonFieldName,
  type FieldSpec,
  type KindName,
  type KindSpec,
  type RecordField,
} from './kinds.js';

const MAX_SOURCE_LENGTH = 128;
export const MAX_BATCH_RECORDS = 10_000;

/**
 * Plausible time for a reading: from 2000-01-01 (a clock before it was never set) to 2100-01-01.
 * The upper bound here is the fixed one the schema can state; validate.ts also refuses timestamps
 * more than MAX_CLOCK_SKEW_SECONDS ahead of the server clock, a bound JSON Schema cannot express
 * because it moves with the clock. A record outside these bounds would sit outside every time
 * window and be removed by retention: stored, yet lost.
 */
export const MIN_TIMESTAMP = 946_684_800;
export const MAX_TIMESTAMP = 4_102_444_800;

/**
 * The largest magnitude of a measurement: the largest float32, so every value a binary frame can
 * carry is accepted (the standalone collector forwards frames through this API). It keeps sums
 * finite: aggregates add values up, and two values near 1.8e308 sum to Infinity, which JSON turns
 * into null; below 3.4e38 it takes more than 1e270 records in one bucket to overflow.
 */
export const MAX_MEASUREMENT = 3.4028234663852886e38;

/** The rules a producer's values of the common fields must follow, beyond their type. */
const COMMON_INPUT_RULES: Partial<Record<CommonFieldName, object>> = {
  timestamp: {
    minimum: MIN_TIMESTAMP,
    maximum: MAX_TIMESTAMP,
    description:
      'Unix seconds (float) of the reading; server time when missing. From 2000-01-01 (946684800) to 2100-01-01 ' +
      '(4102444800), and at most MAX_CLOCK_SKEW_SECONDS (default 86400) ahead of the server clock: a later one ' +
      'is answered 422, as no time window could find it.',
  },
  source: { minLength: 1, maxLength: MAX_SOURCE_LENGTH },
  battery_id: { description: `${COMMON_FIELDS.battery_id.description}. Default "${DEFAULT_BATTERY_ID}".` },
};

function inputRulesOf(field: RecordField): object {
  if (field.type === 'numbers') return { maxItems: field.maxItems, items: { minimum: -MAX_MEASUREMENT, maximum: MAX_MEASUREMENT } };
  if (!field.measurement) return COMMON_INPUT_RULES[field.name as CommonFieldName] ?? {};
  // Integers are stored and read back as IEEE doubles: past 2^53 they would come back changed
  // (2.9e27 as a float), so only safe integers are taken.
  return field.type === 'integer'
    ? { minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }
    : { minimum: -MAX_MEASUREMENT, maximum: MAX_MEASUREMENT };
}

function schemaOf(field: FieldSpec, rules: { items?: Parameters<typeof Type.Number>[0] } & object = {}): TSchema {
  const { items, ...own } = rules;
  const options = {
    description: field.description,
    example: field.example,
    ...(field.pattern === undefined ? {} : { pattern: field.pattern }),
    ...own,
  };
  switch (field.type) {
    case 'string':
      return Type.String(options);
    case 'integer':
      return Type.Integer(options);
    case 'numbers':
      return Type.Array(Type.Number(items ?? {}), options);
    default:
      return Type.Number(options);
  }
}

export const BatteryId = schemaOf(COMMON_FIELDS.battery_id);

/** A `source` as reads filter by it: the limits of the field a producer sends. */
export const Source = schemaOf(
  { ...COMMON_FIELDS.source, description: 'Only records of this producer (source), e.g. battery_monitor_analytics' },
  COMMON_INPUT_RULES.source,
);

/**
 * What a producer sends. Unknown properties are ignored, not refused, as the original service's
 * Pydantic models did: producers that send extra fields (firmware versions, sequence numbers) keep
 * working. So the schema leaves additionalProperties open, and the validator removes what it does not name.
 */
export function inputSchemaOf(kind: KindSpec) {
  const properties: Record<string, TSchema> = {};
  for (const field of inputFields(kind.name)) {
    const schema = schemaOf(field, inputRulesOf(field));
    properties[field.name] = field.measurement ? schema : Type.Optional(schema);
  }
  return Type.Object(properties, {
    $id: `${kind.title}Input`,
    title: `${kind.title}Input`,
    description: `One ${kind.label.toLowerCase()} record. Fields not listed here are ignored.`,
  });
}

/** What the API answers: the stored record, without input bounds (stored rows, not requests). */
export function recordSchemaOf(kind: KindSpec) {
  const properties: Record<string, TSchema> = {};
  for (const field of recordFields(kind.name)) {
    const schema = schemaOf(field);
    properties[field.name] = field.alwaysStored ? schema : Type.Optional(schema);
  }
  return Type.Object(properties, { $id: kind.title, title: kind.title });
}

export const inputSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, inputSchemaOf(kind)])) as Record<KindName, TObject>;
export const recordSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, recordSchemaOf(kind)])) as Record<KindName, TObject>;

/** Ajv options shared by every validator of records, HTTP or TCP. */
export const RECORD_AJV_OPTIONS = {
  allErrors: true,
  // Unknown fields are ignored, not refused: removed from the record here ('all' removes what
  // `properties` does not name, without the schema saying additionalProperties: false, which
  // would tell clients they are refused).
  removeAdditional: 'all',
  useDefaults: false,
  coerceTypes: false,
  // Rejects NaN and Infinity: JSON.parse turns 1e999 into Infinity.
  strictNumbers: true,
  strict: false,
} as const;
