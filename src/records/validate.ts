/**
 * Record validation shared by the HTTP API and the TCP collector, with errors shaped like the
 * original service's (FastAPI + Pydantic v1) 422 `detail` list: one entry per bad field.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { DEFAULT_MAX_CLOCK_SKEW_SECONDS } from '../config.js';
import { KIND_NAMES, type KindName, type RecordInput } from './kinds.js';
import { inputSchemas, MAX_BATCH_RECORDS, MAX_TIMESTAMP, MIN_TIMESTAMP, RECORD_AJV_OPTIONS } from './schemas.js';

export interface ValidationDetail {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export function createRecordAjv(): Ajv {
  return new Ajv(RECORD_AJV_OPTIONS);
}

const ajv = createRecordAjv();
const validators = Object.fromEntries(
  KIND_NAMES.map((kind) => [kind, ajv.compile(inputSchemas[kind]!)]),
) as Record<KindName, ValidateFunction>;

/**
 * The moving bound on timestamps: at most `maxClockSkewSeconds` ahead of `now`. A setting
 * (MAX_CLOCK_SKEW_SECONDS) that the HTTP API and the JSON collector both pass in.
 */
export interface ClockBound {
  maxClockSkewSeconds: number;
  /** Server clock, Unix seconds; the current time when missing. */
  now?: number;
}

export const DEFAULT_CLOCK_BOUND: ClockBound = { maxClockSkewSeconds: DEFAULT_MAX_CLOCK_SKEW_SECONDS };

export type Validation =
  | { ok: true; record: RecordInput }
  | {
      ok: false;
      detail: ValidationDetail[];
      /** The timestamp is outside plausible time and nothing else is wrong (the collector counts these apart). */
      timestampOutOfRange: boolean;
    };

const isoDate = (seconds: number) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');

/**
 * What the kind's schema finds wrong with a record, `loc` naming where it sits; nothing when it is
 * valid. Unknown properties are removed from `value` (ignored, as the original service ignored them).
 */
export function schemaDetail(kind: KindName, value: unknown, loc: (string | number)[] = []): ValidationDetail[] {
  const validate = validators[kind];
  return validate(value) ? [] : toDetail(validate.errors ?? [], loc);
}

/**
 * Validates one arriving record in place: the kind's schema, then the clock bound. Unknown
 * properties are removed from `value`.
 */
export function validateRecord(
  kind: KindName,
  value: unknown,
  loc: (string | number)[] = [],
  clock: ClockBound = DEFAULT_CLOCK_BOUND,
): Validation {
  const detail = schemaDetail(kind, value, loc);
  const timestamp = typeof value === 'object' && value !== null ? (value as { timestamp?: unknown }).timestamp : undefined;
  // JSON Schema has no "now": the skew bound is checked here, after the fixed bounds of the schema.
  if (typeof timestamp === 'number' && timestamp >= MIN_TIMESTAMP && timestamp <= MAX_TIMESTAMP) {
    const latest = (clock.now ?? Date.now() / 1000) + clock.maxClockSkewSeconds;
    if (timestamp > latest) {
      detail.push({
        loc: [...loc, 'timestamp'],
        msg:
          `ensure this value is less than or equal to ${latest}: at most ${clock.maxClockSkewSeconds} s ` +
          `(MAX_CLOCK_SKEW_SECONDS) ahead of the server clock, ${isoDate(latest)}`,
        type: 'value_error.number.not_le',
      });
    }
  }
  if (detail.length === 0) return { ok: true, record: value as RecordInput };
  const timestampOutOfRange = detail.every(
    (entry) => entry.loc[entry.loc.length - 1] === 'timestamp' && /^value_error\.number\.not_(ge|le)$/.test(entry.type),
  );
  return { ok: false, detail, timestampOutOfRange };
}

/** JSON Schema's type names as Pydantic v1 names them in its messages and error types. */
const PYDANTIC_TYPES: Record<string, string> = { number: 'float', integer: 'integer', string: 'str', array: 'list' };

/** Turns Ajv errors into Pydantic-style entries; `prefix` is where the data sits ('body', index…). */
export function toDetail(errors: readonly ErrorObject[], prefix: (string | number)[]): ValidationDetail[] {
  const detail: ValidationDetail[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    const path = error.instancePath
      .split('/')
      .slice(1)
      .map((part) => (/^\d+$/.test(part) ? Number(part) : part.replace(/~1/g, '/').replace(/~0/g, '~')));
    let entry: ValidationDetail;
    switch (error.keyword) {
      case 'required':
        entry = { loc: [...prefix, ...path, error.params.missingProperty], msg: 'field required', type: 'value_error.missing' };
        break;
      case 'type': {
        const expected = String(error.params.type);
        const pydanticName = PYDANTIC_TYPES[expected] ?? expected;
        entry = { loc: [...prefix, ...path], msg: `value is not a valid ${pydanticName}`, type: `type_error.${pydanticName}` };
        break;
      }
      case 'pattern':
        entry = { loc: [...prefix, ...path], msg: `string does not match ${error.params.pattern}`, type: 'value_error.str.regex' };
        break;
      case 'additionalProperties':
        entry = { loc: [...prefix, ...path, error.params.additionalProperty], msg: 'extra fields not permitted', type: 'value_error.extra' };
        break;
      case 'minimum':
      case 'exclusiveMinimum':
      case 'maximum':
      case 'exclusiveMaximum': {
        const words = { minimum: ['greater than or equal to', 'ge'], exclusiveMinimum: ['greater than', 'gt'], maximum: ['less than or equal to', 'le'], exclusiveMaximum: ['less than', 'lt'] }[error.keyword];
        // Timestamps' bounds are dates: say which.
        const date = path[path.length - 1] === 'timestamp' ? ` (${isoDate(Number(error.params.limit))})` : '';
        entry = { loc: [...prefix, ...path], msg: `ensure this value is ${words[0]} ${error.params.limit}${date}`, type: `value_error.number.not_${words[1]}` };
        break;
      }
      case 'enum':
      case 'const':
      case 'anyOf':
        entry = { loc: [...prefix, ...path], msg: 'value is not a permitted choice', type: 'type_error.enum' };
        break;
      case 'maxItems':
        entry = { loc: [...prefix, ...path], msg: `ensure this value has at most ${error.params.limit} items`, type: 'value_error.list.max_items' };
        break;
      default:
        entry = { loc: [...prefix, ...path], msg: error.message ?? 'invalid value', type: `value_error.${error.keyword}` };
    }
    const id = JSON.stringify(entry.loc);
    if (!seen.has(id)) {
      seen.add(id);
      detail.push(entry);
    }
  }
  return detail;
}

export type BodyValidation =
  | { ok: true; records: RecordInput[]; isArray: boolean }
  | { ok: false; detail: ValidationDetail[] };

/** A POST body: one record, or an array of 1 to MAX_BATCH_RECORDS records, all valid or none taken. */
export function validateBody(kind: KindName, body: unknown, clockBound: ClockBound = DEFAULT_CLOCK_BOUND): BodyValidation {
  // One clock reading for the whole body: every record of an array is judged against the same bound.
  const clock = { ...clockBound, now: clockBound.now ?? Date.now() / 1000 };
  if (Array.isArray(body)) {
    if (body.length === 0 || body.length > MAX_BATCH_RECORDS) {
      return {
        ok: false,
        detail: [
          {
            loc: ['body'],
            msg: `send 1 to ${MAX_BATCH_RECORDS} records in one array, got ${body.length}`,
            type: 'value_error.list.size',
          },
        ],
      };
    }
    const detail: ValidationDetail[] = [];
    body.forEach((item, index) => {
      const result = validateRecord(kind, item, ['body', index], clock);
      if (!result.ok) detail.push(...result.detail);
    });
    return detail.length === 0 ? { ok: true, records: body as RecordInput[], isArray: true } : { ok: false, detail };
  }
  const result = validateRecord(kind, body, ['body'], clock);
  return result.ok ? { ok: true, records: [result.record], isArray: false } : { ok: false, detail: result.detail };
}
