/**
 * The alarm API's schemas (TypeBox): rule input, one variant per rule type (and per kind where the
 * field depends on it) so that the OpenAPI document states every constraint the server checks, and
 * the answers (rules, alarms, their events). `parseRuleInput` validates a body against them and names
 * each bad field as the rest of the API does (422 `detail` list).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Type, type TSchema } from 'typebox';
import { aggregatedFields, BATTERY_ID_PATTERN, KIND_NAMES, type KindName } from '../records/kinds.js';
import { MAX_MEASUREMENT, MAX_TIMESTAMP } from '../records/schemas.js';
import { toDetail, type ValidationDetail } from '../records/validate.js';
import { ALARM_STATES, CLEAR_REASONS, EVENT_TYPES, RULE_TYPES, SEVERITIES, type RuleSettings, type RuleType } from './model.js';

/** Rule ids: the default rules' names (`temperature`), else UUIDs; alarm ids add the pack and a number. */
export const ID_PATTERN = '^[A-Za-z0-9._:~-]{1,200}$';
export const FIELD_PATTERN = '^[a-z][a-z0-9_]{0,63}$';
export const MAX_NAME_LENGTH = 100;
export const MAX_DEBOUNCE_SECONDS = 86_400;
export const MIN_WINDOW_SECONDS = 10;
export const MAX_WINDOW_SECONDS = 86_400;
export const DEFAULT_WINDOW_SECONDS = 60;
/** A year of silence: past it a pack is not late, it is gone. */
export const MAX_SILENCE_SECONDS = 365 * 86_400;
/** The field cell_imbalance rules judge by default: max minus min cell voltage, in volts, derived by the server from cell_voltages. */
export const CELL_VOLTAGE_DELTA = 'cell_voltage_delta';
export const MAX_ACK_BY_LENGTH = 100;
export const MAX_ACK_NOTE_LENGTH = 1000;
export const MAX_ALARMS_LIMIT = 1000;

const RuleTypeSchema = Type.Enum(RULE_TYPES, { description: 'threshold, no_data, rate_of_rise or cell_imbalance (docs/alarms.md)' });
const KindSchema = Type.Enum(KIND_NAMES, { description: 'The record kind the rule judges' });
const SeveritySchema = Type.Enum(SEVERITIES);

const nullable = <T>(schema: Record<string, unknown>) => Type.Unsafe<T | null>({ ...schema, type: [schema.type as string, 'null'] });

/** How each rule type's levels read; `unit` goes into their descriptions. */
const LEVELS: Record<RuleType, { sides: 'both' | 'above'; bounds: object; unit: string }> = {
  threshold: { sides: 'both', bounds: { minimum: -MAX_MEASUREMENT, maximum: MAX_MEASUREMENT }, unit: "in the field's unit" },
  no_data: { sides: 'above', bounds: { exclusiveMinimum: 0, maximum: MAX_SILENCE_SECONDS }, unit: 'seconds without a record' },
  rate_of_rise: { sides: 'above', bounds: { exclusiveMinimum: 0, maximum: MAX_MEASUREMENT }, unit: "rise per minute, in the field's unit" },
  cell_imbalance: { sides: 'above', bounds: { exclusiveMinimum: 0, maximum: MAX_MEASUREMENT }, unit: 'max minus min cell voltage, in volts' },
};

function bandSchema(type: RuleType, severity: 'warning' | 'critical') {
  const { sides, bounds, unit } = LEVELS[type];
  const above = { type: 'number', ...bounds, description: `Past the level when the value is above this (${unit})` };
  const description =
    `The ${severity} level, or null for none. A rule needs a warning or a critical level (or both).` +
    (sides === 'both' ? ' Give `above`, `below` or both.' : '');
  if (sides === 'both') {
    return nullable<{ above?: number; below?: number }>({
      type: 'object',
      properties: { above, below: { type: 'number', ...bounds, description: `Past the level when the value is below this (${unit})` } },
      additionalProperties: false,
      minProperties: 1,
      description,
    });
  }
  return nullable<{ above: number }>({ type: 'object', properties: { above }, required: ['above'], additionalProperties: false, description });
}

/** A rule needs a level: a warning, a critical one, or both (as objects, not null). */
const NEEDS_A_LEVEL = [
  { required: ['warning'], properties: { warning: { type: 'object' } } },
  { required: ['critical'], properties: { critical: { type: 'object' } } },
];

const readOnly = {
  id: Type.Optional(Type.String({ description: "Read-only: ignored (the path's id, or a new one)" })),
  builtin: Type.Optional(Type.Boolean({ description: 'Read-only: ignored' })),
  customized: Type.Optional(Type.Boolean({ description: 'Read-only: ignored' })),
  created_at: Type.Optional(Type.Number({ description: 'Read-only: ignored' })),
  updated_at: Type.Optional(Type.Number({ description: 'Read-only: ignored' })),
};

const name = Type.String({
  minLength: 1,
  maxLength: MAX_NAME_LENGTH,
  description: 'What the rule is called in alarms and notifications',
  example: 'Cell temperature',
});

const hysteresis = Type.Optional(
  Type.Number({
    minimum: 0,
    maximum: MAX_MEASUREMENT,
    default: 0,
    description: 'How far back past a level the value must come before the alarm steps down or clears (same unit as the levels)',
  }),
);

const debounce = Type.Optional(
  Type.Number({
    minimum: 0,
    maximum: MAX_DEBOUNCE_SECONDS,
    default: 0,
    description: 'How long (record time) the condition must hold before the alarm is raised; 0 raises on the first reading past a level',
  }),
);

const scope = {
  battery_id: Type.Optional(
    nullable<string>({
      type: 'string',
      pattern: BATTERY_ID_PATTERN,
      default: null,
      description: 'The one pack the rule watches; null (the default) for every pack',
      example: null,
    }),
  ),
  enabled: Type.Optional(Type.Boolean({ default: true, description: 'A disabled rule judges nothing; its open alarms are cleared' })),
};

/** What a rule may judge: the kind's measurements and the numbers the server derives (cell_voltage_delta, cell_temp_max…). */
const measurementFields = (kind: KindName) => aggregatedFields(kind).map((field) => field.name);

function fieldSchema(type: RuleType, kind: KindName | undefined): TSchema {
  if (kind !== undefined) return Type.Unsafe<string>({ type: 'string', enum: measurementFields(kind), description: `A measurement of ${kind} records` });
  if (type === 'cell_imbalance') {
    return Type.Optional(
      Type.String({
        pattern: FIELD_PATTERN,
        default: CELL_VOLTAGE_DELTA,
        description: 'The record field holding max minus min cell voltage (volts); a record without it is skipped',
      }),
    );
  }
  return Type.Optional(Type.Null({ description: 'No field: the rule judges silence' }));
}

/** One body variant: a rule type, for one kind when its field is one of that kind's measurements. */
function variant(type: RuleType, kind: KindName | undefined) {
  // A silence has no hysteresis (it only grows until the next reading ends it), and its level is a duration already.
  const silence = type === 'no_data';
  const properties: Record<string, TSchema> = {
    name,
    type: Type.Literal(type),
    kind: kind === undefined ? Type.Optional(Type.Enum(KIND_NAMES, { default: 'battery-data', description: 'The record kind judged' })) : Type.Literal(kind),
    field: fieldSchema(type, kind),
    warning: Type.Optional(bandSchema(type, 'warning')),
    critical: Type.Optional(bandSchema(type, 'critical')),
    hysteresis: silence ? Type.Optional(Type.Literal(0, { description: 'Always 0 for no_data' })) : hysteresis,
    debounce_seconds: silence ? Type.Optional(Type.Literal(0, { description: 'Always 0 for no_data: its level is a duration already' })) : debounce,
    window_seconds:
      type === 'rate_of_rise'
        ? Type.Optional(
            Type.Integer({
              minimum: MIN_WINDOW_SECONDS,
              maximum: MAX_WINDOW_SECONDS,
              default: DEFAULT_WINDOW_SECONDS,
              description: 'The window the rise is measured over',
            }),
          )
        : Type.Optional(Type.Null({ description: 'rate_of_rise only' })),
    ...scope,
    ...readOnly,
  };
  return Type.Unsafe<Record<string, unknown>>({
    type: 'object',
    title: kind === undefined ? `${type} rule` : `${type} rule on ${kind}`,
    properties,
    required: ['name', 'type', ...(kind === undefined ? [] : ['kind', 'field'])],
    additionalProperties: false,
    anyOf: NEEDS_A_LEVEL,
  });
}

/** The variants by discriminator: `type`, and `type:kind` where the field is a measurement of the kind. */
const VARIANTS = new Map<string, TSchema>();
for (const type of RULE_TYPES) {
  if (type === 'threshold' || type === 'rate_of_rise') for (const kind of KIND_NAMES) VARIANTS.set(`${type}:${kind}`, variant(type, kind));
  else VARIANTS.set(type, variant(type, undefined));
}
const byKindOfField = (type: unknown) => type === 'threshold' || type === 'rate_of_rise';

export const AlarmRuleInput = Type.Unsafe<Record<string, unknown>>({
  $id: 'AlarmRuleInput',
  title: 'AlarmRuleInput',
  description:
    'A rule: its type, the kind and field it judges, warning and critical levels, hysteresis, debounce and scope. ' +
    'threshold and rate_of_rise judge a measurement of the kind; cell_imbalance any field (cell_voltage_delta by ' +
    'default); no_data the silence of a pack. Unknown fields are refused; the read-only fields of an answer are ' +
    'ignored, so a rule read with GET can be sent back with PUT.',
  anyOf: [...VARIANTS.values()],
});

const Band = Type.Object({ above: Type.Optional(Type.Number()), below: Type.Optional(Type.Number()) });

export const AlarmRuleSchema = Type.Object(
  {
    id: Type.String({ example: 'temperature' }),
    name: Type.String({ example: 'Cell temperature' }),
    type: RuleTypeSchema,
    kind: KindSchema,
    field: Type.Union([Type.String(), Type.Null()], { example: 'cell_temp' }),
    warning: Type.Union([Band, Type.Null()], { example: { below: 0, above: 45 } }),
    critical: Type.Union([Band, Type.Null()], { example: { below: -20, above: 60 } }),
    hysteresis: Type.Number({ example: 0.9 }),
    debounce_seconds: Type.Number({ example: 0 }),
    window_seconds: Type.Union([Type.Integer(), Type.Null()], { example: null }),
    battery_id: Type.Union([Type.String(), Type.Null()], { description: 'The one pack watched; null: every pack', example: null }),
    enabled: Type.Boolean(),
    builtin: Type.Boolean({ description: 'A default rule, created at first start from the specs file and NO_DATA_SECONDS' }),
    customized: Type.Boolean({ description: 'A default rule edited through the API: it no longer follows the specs file' }),
    created_at: Type.Number({ description: 'Server time, Unix seconds' }),
    updated_at: Type.Number({ description: 'Server time, Unix seconds' }),
  },
  { $id: 'AlarmRule', title: 'AlarmRule' },
);

const NullableNumber = (description: string) => Type.Union([Type.Number(), Type.Null()], { description });
const NullableString = (description: string) => Type.Union([Type.String(), Type.Null()], { description });

export const AlarmEventSchema = Type.Object(
  {
    id: Type.String({ description: 'Stable: receivers of notifications drop duplicates by it', example: 'temperature~pack-1~3~1' }),
    alarm_id: Type.String({ example: 'temperature~pack-1~3' }),
    seq: Type.Integer({ description: '1, 2, … within the alarm' }),
    type: Type.Enum(EVENT_TYPES),
    rule_id: Type.String(),
    battery_id: Type.String(),
    severity: SeveritySchema,
    previous_severity: Type.Union([SeveritySchema, Type.Null()]),
    value: NullableNumber('The value at the change (no_data: seconds of silence); null for a clear by a rule change'),
    at: Type.Number({ description: "Unix seconds: the reading's timestamp; server time for acknowledgements, silences and rule changes" }),
    server_at: Type.Number({ description: 'Server time of the change, Unix seconds' }),
    by: NullableString('Who acknowledged'),
    note: NullableString('Their note'),
    reason: Type.Union([Type.Enum(CLEAR_REASONS), Type.Null()], { description: 'Why it cleared' }),
  },
  { $id: 'AlarmEvent', title: 'AlarmEvent' },
);

const alarmProperties = {
  id: Type.String({ example: 'temperature~pack-1~3' }),
  rule_id: Type.String({ example: 'temperature' }),
  rule_name: Type.String({ description: "The rule's name when the alarm was raised", example: 'Cell temperature' }),
  type: RuleTypeSchema,
  kind: KindSchema,
  field: Type.Union([Type.String(), Type.Null()]),
  battery_id: Type.String({ example: 'pack-1' }),
  state: Type.Enum(ALARM_STATES, { description: 'active, acknowledged (both open) or cleared' }),
  severity: Type.Enum(SEVERITIES, { description: 'Now (for a cleared alarm: the last before it cleared)' }),
  peak_severity: Type.Enum(SEVERITIES, { description: 'The highest it reached' }),
  raised_at: Type.Number({ description: "Unix seconds: the timestamp of the reading that raised it (no_data: server time)" }),
  raised_value: Type.Number({ description: 'The value that raised it (no_data: seconds of silence)' }),
  raised_server_at: Type.Number({ description: 'Server time it was raised' }),
  value: Type.Number({ description: 'The value at the latest change' }),
  updated_at: Type.Number({ description: 'Server time of the latest change' }),
  acknowledged_by: NullableString('Who acknowledged it'),
  acknowledged_note: NullableString('Their note'),
  acknowledged_at: NullableNumber('Server time of the acknowledgement'),
  cleared_at: NullableNumber("Unix seconds: the timestamp of the reading that cleared it (server time for a rule change)"),
  cleared_value: NullableNumber('The value that cleared it; null for a rule change'),
  cleared_server_at: NullableNumber('Server time it cleared'),
  clear_reason: Type.Union([Type.Enum(CLEAR_REASONS), Type.Null()], { description: 'condition, rule_changed, rule_disabled or rule_deleted' }),
  event_count: Type.Integer({ description: 'Changes so far' }),
};

export const AlarmSchema = Type.Object(alarmProperties, { $id: 'Alarm', title: 'Alarm' });

export const AlarmWithEventsSchema = Type.Object(
  { ...alarmProperties, events: Type.Array(AlarmEventSchema, { description: 'Every change, oldest first' }) },
  { $id: 'AlarmWithEvents', title: 'AlarmWithEvents' },
);

export const AcknowledgeInput = Type.Object(
  {
    by: Type.String({ minLength: 1, maxLength: MAX_ACK_BY_LENGTH, description: 'Who acknowledges', example: 'operator on duty' }),
    note: Type.Optional(Type.String({ maxLength: MAX_ACK_NOTE_LENGTH, description: 'Why, or what is being done', example: 'cooling fan replaced' })),
  },
  { $id: 'AcknowledgeAlarm', title: 'AcknowledgeAlarm', additionalProperties: false },
);

export const AlarmStateFilter = Type.Enum([...ALARM_STATES, 'open', 'all'], {
  default: 'all',
  description: 'active, acknowledged, cleared, open (active or acknowledged) or all',
});

export const SinceSchema = Type.Number({
  minimum: 0,
  maximum: MAX_TIMESTAMP,
  description: 'Unix seconds: only alarms open at some moment since then (still open, or cleared at or after it)',
});

export const LimitSchema = Type.Integer({ minimum: 1, maximum: MAX_ALARMS_LIMIT, default: 100, description: 'At most this many alarms, newest raised first' });

export const IdSchema = Type.String({ pattern: ID_PATTERN });

// Bodies are validated here, not by the app's validator (src/app.ts leaves bodies to the handlers).
const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false, useDefaults: false, removeAdditional: false });
const anyRule = ajv.compile(AlarmRuleInput);
const variantValidators = new Map<string, ValidateFunction>([...VARIANTS].map(([key, schema]) => [key, ajv.compile(schema)]));
const acknowledgeValidator = ajv.compile(AcknowledgeInput);

export type RuleParse = { ok: true; settings: RuleSettings } | { ok: false; detail: ValidationDetail[] };

/** A rule body, checked against the documented schema, with the defaults filled in. */
export function parseRuleInput(body: unknown): RuleParse {
  if (anyRule(body)) return { ok: true, settings: withDefaults(body as Record<string, unknown>) };
  return { ok: false, detail: ruleDetail(body) };
}

/** What is wrong, named in the variant the body asks for (its `type`, and `kind`), not in all eight. */
function ruleDetail(body: unknown): ValidationDetail[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return [{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }];
  const { type, kind } = body as { type?: unknown; kind?: unknown };
  if (type === undefined) return [{ loc: ['body', 'type'], msg: 'field required', type: 'value_error.missing' }];
  if (!(RULE_TYPES as readonly unknown[]).includes(type)) return [choice(['body', 'type'], RULE_TYPES)];
  let key = String(type);
  if (byKindOfField(type)) {
    if (kind === undefined) return [{ loc: ['body', 'kind'], msg: 'field required', type: 'value_error.missing' }];
    if (!(KIND_NAMES as readonly unknown[]).includes(kind)) return [choice(['body', 'kind'], KIND_NAMES)];
    key = `${key}:${String(kind)}`;
  }
  const validate = variantValidators.get(key)!;
  validate(body);
  return detailOf(validate.errors ?? []);
}

function choice(loc: (string | number)[], allowed: readonly unknown[]): ValidationDetail {
  return { loc, msg: `value is not a permitted choice: one of ${allowed.map(String).join(', ')}`, type: 'type_error.enum' };
}

/** Ajv's errors as `detail` entries; "needs a level" said once, allowed values listed. */
function detailOf(errors: readonly ErrorObject[]): ValidationDetail[] {
  const detail: ValidationDetail[] = [];
  const rest: ErrorObject[] = [];
  let needsLevel = false;
  for (const error of errors) {
    if (error.schemaPath.startsWith('#/anyOf')) needsLevel = true;
    else if (error.keyword === 'anyOf' && error.instancePath === '') needsLevel = true;
    else if (error.keyword === 'enum') detail.push(choice(['body', ...pathOf(error)], error.params.allowedValues as unknown[]));
    else rest.push(error);
  }
  detail.push(...toDetail(rest, ['body']));
  // Only when the levels given are not themselves invalid (those are named already).
  if (needsLevel && !detail.some((entry) => entry.loc[1] === 'warning' || entry.loc[1] === 'critical')) {
    detail.push({ loc: ['body', 'warning'], msg: 'give a warning or a critical level (or both)', type: 'value_error.missing' });
  }
  return detail;
}

const pathOf = (error: ErrorObject) =>
  error.instancePath
    .split('/')
    .slice(1)
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part));

function withDefaults(body: Record<string, unknown>): RuleSettings {
  const type = body.type as RuleType;
  const band = (value: unknown) => (value === undefined || value === null ? null : { ...(value as object) });
  return {
    name: body.name as string,
    type,
    kind: (body.kind as KindName | undefined) ?? 'battery-data',
    field: type === 'no_data' ? null : ((body.field as string | undefined) ?? CELL_VOLTAGE_DELTA),
    warning: band(body.warning),
    critical: band(body.critical),
    hysteresis: (body.hysteresis as number | undefined) ?? 0,
    debounce_seconds: (body.debounce_seconds as number | undefined) ?? 0,
    window_seconds: type === 'rate_of_rise' ? ((body.window_seconds as number | undefined) ?? DEFAULT_WINDOW_SECONDS) : null,
    battery_id: (body.battery_id as string | null | undefined) ?? null,
    enabled: (body.enabled as boolean | undefined) ?? true,
  };
}

export type AcknowledgeParse = { ok: true; by: string; note: string | null } | { ok: false; detail: ValidationDetail[] };

export function parseAcknowledge(body: unknown): AcknowledgeParse {
  if (acknowledgeValidator(body)) {
    const { by, note } = body as { by: string; note?: string };
    return { ok: true, by, note: note ?? null };
  }
  if (body === undefined || body === null) return { ok: false, detail: [{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }] };
  return { ok: false, detail: toDetail(acknowledgeValidator.errors ?? [], ['body']) };
}
