/**
 * Record validation shared by the HTTP API and the TCP collector, with errors shaped like the
 * original service's (FastAPI + Pydantic v1) 422 `detail` list: one entry per bad field.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { KIND_NAMES, type KindName, type RecordInput } from './kinds.js';
import { inputSchemas, RECORD_AJV_OPTIONS } from './schemas.js';

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

export type Validation =
  | { ok: true; record: RecordInput }
  | { ok: false; detail: ValidationDetail[] };

/** Validates one record in place (unknown properties are removed from `value`). */
export function validateRecord(kind: KindName, value: unknown, loc: (string | number)[] = []): Validation {
  const validate = validators[kind];
  if (validate(value)) return { ok: true, record: value as RecordInput };
  return { ok: false, detail: toDetail(validate.errors ?? [], loc) };
}

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
        const pydanticName = expected === 'number' ? 'float' : expected === 'integer' ? 'integer' : expected === 'string' ? 'str' : expected;
        entry = { loc: [...prefix, ...path], msg: `value is not a valid ${pydanticName}`, type: `type_error.${pydanticName}` };
        break;
      }
      case 'pattern':
        entry = { loc: [...prefix, ...path], msg: `string does not match ${error.params.pattern}`, type: 'value_error.str.regex' };
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
