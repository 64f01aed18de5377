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

function measurementProperties(kind: KindSpec): Record<string, TSchema> {
  const properties: Record<string, TSchema> = {};
  for (const [name, field] of Object.entries(kind.fields)) {
    const options = { description: field.description, example: field.example };
    properties[name] = field.type === 'integer' ? Type.Integer(options) : Type.Number(options);
  }
  return properties;
}

/** What a producer sends. Unknown properties are removed by the validator (additionalProperties: false). */
export function inputSchemaOf(kind: KindSpec) {
  return Type.Object(
    {
      timestamp: Type.Optional(
        Type.Number({ description: 'Unix seconds (float). Server time when missing.', example: 1732700000.5 }),
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
    { $id: `${kind.title}Input`, additionalProperties: false, title: `${kind.title}Input` },
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
      ...measurementProperties(kind),
    },
    { $id: kind.title, title: kind.title },
  );
}

export const inputSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, inputSchemaOf(kind)]));
export const recordSchemas = Object.fromEntries(ALL_KINDS.map((kind) => [kind.name, recordSchemaOf(kind)]));

/** Ajv options shared by every validator of records, HTTP or TCP. */
export const RECORD_AJV_OPTIONS = {
  allErrors: true,
  removeAdditional: true,
  useDefaults: false,
  coerceTypes: false,
  // Rejects NaN and Infinity: JSON.parse turns 1e999 into Infinity.
  strictNumbers: true,
  strict: false,
} as const;
