/**
 * TypeBox schemas of the analytics API (GET /api/batteries/{battery_id}/health, GET/PUT .../specs):
 * the OpenAPI document and the answers' types come from them, and `parseSpecsInput` validates a PUT
 * body against them (app.ts leaves bodies to the handlers), naming each bad field.
 */
import { Ajv } from 'ajv';
import { Type, type Static } from 'typebox';
import { toDetail, type ValidationDetail } from '../records/validate.js';
import type { PackSpecs } from './pack-state.js';
import { effectiveSpecs, type SpecOverrides } from './pack-specs.js';

const nullableNumber = (description: string) => Type.Union([Type.Number(), Type.Null()], { description });

// A schema used more than once in an answer (Estimate, PackSpecs) has an `$id`: it is written out at its
// first use and referred to by `Type.Ref` elsewhere, so the OpenAPI document holds it once (a component of
// that name) and `npm run generate` makes one web type of it. Not written out twice (Fastify's serializer
// refuses an `$id` that resolves to two schemas), and not in a `$defs` at the top of the answer
// (@fastify/swagger 9.9 leaves those out of the document's components).

export const EstimateSchema = Type.Object(
  {
    value: nullableNumber('The estimate; null when it cannot be made yet (see reason)'),
    low: nullableNumber('Lower bound of its 95 % interval; null where it has none'),
    high: nullableNumber('Upper bound of its 95 % interval; null where it has none (or, for remaining life, no fade can be ruled out)'),
    unit: Type.String({ example: '%' }),
    segments: Type.Union([Type.Integer(), Type.Null()], { description: 'Capacity segments behind it; null where it rests on the readings alone' }),
    method: Type.String({ description: 'How it is computed' }),
    reason: Type.Union([Type.String(), Type.Null()], { description: 'Why the value is null' }),
  },
  { $id: 'Estimate', title: 'Estimate' },
);
const EstimateRef = Type.Unsafe<Static<typeof EstimateSchema>>(Type.Ref('Estimate'));

const SpecsProperties = {
  nominal_capacity_ah: Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000, description: 'Nominal capacity, Ah', example: 75 }),
  cell_count: Type.Integer({ minimum: 1, maximum: 10_000, description: 'Cells in series', example: 108 }),
  full_charge_voltage: Type.Number({ exclusiveMinimum: 0, maximum: 100_000, description: 'Pack volts at or above which, current tapered, the pack is full', example: 442.8 }),
  empty_voltage: Type.Number({ exclusiveMinimum: 0, maximum: 100_000, description: 'Pack volts at or below which the pack is empty', example: 324 }),
  end_of_life_soh: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 100, description: 'State of health (percent) where the pack\'s life ends', example: 80 }),
};

export const PackSpecsSchema = Type.Object(SpecsProperties, { $id: 'PackSpecs', title: 'PackSpecs' });
const PackSpecsRef = Type.Unsafe<Static<typeof PackSpecsSchema>>(Type.Ref('PackSpecs'));

export const SpecsInput = Type.Object(
  {
    nominal_capacity_ah: Type.Optional(SpecsProperties.nominal_capacity_ah),
    cell_count: Type.Optional(SpecsProperties.cell_count),
    full_charge_voltage: Type.Optional(SpecsProperties.full_charge_voltage),
    empty_voltage: Type.Optional(SpecsProperties.empty_voltage),
    end_of_life_soh: Type.Optional(SpecsProperties.end_of_life_soh),
  },
  {
    title: 'PackSpecsInput',
    additionalProperties: false,
    description: 'The pack\'s overrides, replacing those it had: a field left out follows the defaults ({} removes every override)',
  },
);

export const PackSpecsAnswer = Type.Object(
  {
    battery_id: Type.String({ example: 'pack-1' }),
    specs: PackSpecsSchema,
    overrides: Type.Object({}, { additionalProperties: true, description: 'The fields set for this pack (the others follow the defaults)' }),
    defaults: PackSpecsRef,
    updated_at: Type.Union([Type.Number(), Type.Null()], { description: 'Server time of the last PUT; null when the pack has none' }),
  },
  { title: 'PackSpecsAnswer' },
);

export const HealthSchema = Type.Object(
  {
    battery_id: Type.String({ example: 'pack-1' }),
    soh: EstimateSchema,
    capacity_ah: EstimateRef,
    equivalent_cycles: EstimateRef,
    ah_in: EstimateRef,
    ah_out: EstimateRef,
    wh_in: EstimateRef,
    wh_out: EstimateRef,
    soc: EstimateRef,
    rul_cycles: EstimateRef,
    rul_hours: EstimateRef,
    readings: Type.Integer({ description: 'Readings taken' }),
    gaps: Type.Integer({ description: 'Gaps longer than ANALYTICS_MAX_GAP_SECONDS, not integrated' }),
    gap_seconds: Type.Number({ description: 'Their total length' }),
    backfill_rows: Type.Integer({ description: 'Rows older than the newest reading taken: stored, not integrated' }),
    anchors: Type.Integer({ description: 'Times the pack was seen full or empty' }),
    rejected_segments: Type.Integer({ description: 'Segments whose capacity was implausible (20-150 % of nominal) and left out' }),
    data_until: Type.Union([Type.Number(), Type.Null()], { description: 'Timestamp of the newest reading taken' }),
    updated_at: Type.Union([Type.Number(), Type.Null()], { description: 'Server time the estimates last changed' }),
    specs: PackSpecsSchema,
  },
  { title: 'BatteryHealth' },
);

export type SpecsInputBody = Static<typeof SpecsInput>;

const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false, useDefaults: false, removeAdditional: false });
const validateSpecs = ajv.compile(SpecsInput);

export type SpecsParse = { ok: true; overrides: SpecOverrides } | { ok: false; detail: ValidationDetail[] };

/** A PUT body checked against the schema, then as a whole with the defaults: full above empty. */
export function parseSpecsInput(body: unknown, defaults: PackSpecs): SpecsParse {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, detail: [{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }] };
  if (!validateSpecs(body)) return { ok: false, detail: toDetail(validateSpecs.errors ?? [], ['body']) };
  const overrides = { ...(body as SpecOverrides) };
  const specs = effectiveSpecs(defaults, overrides);
  if (specs.full_charge_voltage <= specs.empty_voltage) {
    const field = overrides.full_charge_voltage !== undefined ? 'full_charge_voltage' : 'empty_voltage';
    return {
      ok: false,
      detail: [
        {
          loc: ['body', field],
          msg: `full_charge_voltage (${specs.full_charge_voltage}) must be above empty_voltage (${specs.empty_voltage})`,
          type: 'value_error.inconsistent',
        },
      ],
    };
  }
  return { ok: true, overrides };
}
