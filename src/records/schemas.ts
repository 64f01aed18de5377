/**
 * JSON schemas (TypeBox) generated from the kinds table. The same schemas validate HTTP bodies,
 * TCP JSON messages and document the API in OpenAPI.
 */
import { Type, type TSchema } from 'typebox';
import { ALL_KINDS, BATTERY_ID_PATTERN, DEFAULT_BATTERY_ID, type KindSpec } from './kinds.js';

const MAX_SOURCE_LENGTH = 128;
export const MAX_BATCH_RECORDS = 10_000;

const BATTERY_ID_OPTIONS = {
  pattern: BATTERY_ID_PATTERN,
  description: 'Pack identifier: 1-64 of A-Z a-z 0-9 . _ : -',
  example: 'pack-1',
};
export const BatteryId = Type.String(BATTERY_ID_OPTIONS);

/** Binary frames' own clock; the standalone collector forwards it, so the API takes it too. */
const DeviceTime = Type.Number({ description: 'The device clock value a binary frame carried (seconds, often since device start)', example: 1234.5 });

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

function measurementProperties(kind: KindSpec): Record<string, TSchema> {
  const properties: Record<string, TSchema> = {};
  for (const [name, field] of Object.entries(kind.fields)) {
    const options = { description: field.description, example: field.example };
    // Integers are stored and read back as IEEE doubles: past 2^53 they would come back changed
    // (2.9e27 as a float), so only safe integers are taken.
    properties[name] =
      field.type === 'integer'
        ? Type.Integer({ ...options, minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER })
        : Type.Number({ ...options, minimum: -MAX_MEASUREMENT, maximum: MAX_MEASUREMENT });
  }
  return properties;
}

/** The API shape of the kind's fields: no input bounds (stored rows, not requests). */
function storedMeasurementProperties(kind: KindSpec): Record<string, TSchema> {
  const properties: Record<string, TSchema> = {};
  for (const [name, field] of Object.entries(kind.fields)) {
    const options = { description: field.description, example: field.example };
    properties[name] = field.type === 'integer' ? Type.Integer(options) : Type.Number(options);
  }
  return properties;
}

/**
 * What a producer sends. Unknown properties are ignored, not refused, as the original service's
 * Pydantic models did: producers that send extra fields (firmware versions, sequence numbers) keep
 * working. So the schema leaves additionalProperties open, and the validator removes what it does not name.
 */
export function inputSchemaOf(kind: KindSpec) {
  return Type.Object(
    {
      timestamp: Type.Optional(
        Type.Number({
          minimum: MIN_TIMESTAMP,
          maximum: MAX_TIMESTAMP,
          description:
            'Unix seconds (float) of the reading; server time when missing. From 2000-01-01 (946684800) to 2100-01-01 ' +
            '(4102444800), and at most MAX_CLOCK_SKEW_SECONDS (default 86400) ahead of the server clock: a later one ' +
            'is answered 422, as no time window could find it.',
          example: 1732700000.5,
        }),
      ),
      source: Type.Optional(
        Type.String({ minLength: 1, maxLength: MAX_SOURCE_LENGTH, description: 'Producer name', example: kind.defaultSource }),
      ),
      battery_id: Type.Optional(
        Type.String({ ...BATTERY_ID_OPTIONS, description: `${BATTERY_ID_OPTIONS.description}. Default "${DEFAULT_BATTERY_ID}".` }),
      ),
      ...(kind.name === 'battery-data' ? { device_time: Type.Optional(DeviceTime) } : {}),
      ...measurementProperties(kind),
    },
    {
      $id: `${kind.title}Input`,
      title: `${kind.title}Input`,
      description: `One ${kind.label.toLowerCase()} record. Fields not listed here are ignored.`,
    },
  );
}

/** What the API answers: the stored record. */
export function recordSchemaOf(kind: KindSpec) {
  return Type.Object(
    {
      _id: Type.String({ description: 'Record id', example: '42' }),
      timestamp: Type.Number({ description: 'Unix seconds (float) of the reading', example: 1732700000.5 }),
      received_at: Type.Number({ description: 'Unix seconds (float) when the server stored it', example: 1732700000.61 }),
      source: Type.String({ description: 'Producer name', example: kind.defaultSource }),
      battery_id: BatteryId,
      ...(kind.name === 'battery-data' ? { device_time: Type.Optional(DeviceTime) } : {}),
      ...storedMeasurementProperties(kind),
    },
    { $id: kind.title, title: kind.title },
  );
}

export const inputSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, inputSchemaOf(kind)]));
export const recordSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, recordSchemaOf(kind)]));

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
