/**
 * The columnar layout of records, derived from the kinds table: how a batch of records of one kind
 * travels from a decoder to a store without an object per record. Each record is one row of
 * `numericColumns(kind)` numbers, in that fixed order (the common numbers first, then the kind's own
 * measurements in the table's order, then the numbers the server derives), and one row of
 * STRING_COLUMNS strings. The store's key is no column: the store assigns it. A numeric column that a
 * record may lack (`optionalColumns`) holds NaN for "absent": every number that is present is finite,
 * as validation and decoding ensure. Array fields (`arrayFields`, per-cell readings) are no column
 * either: a batch keeps them beside its rows, only for the rows that have them.
 */
import { aggregatedFields, byKind, COMMON_FIELDS, recordFields, type CommonFieldName, type KindName, type KindSpec } from './kinds.js';

const written = (kind: KindSpec) => recordFields(kind.name).filter((field) => field.setBy !== 'store');
const numeric = (kind: KindSpec) => written(kind).filter((field) => field.type === 'number' || field.type === 'integer');

const NUMERIC = byKind((kind) => numeric(kind).map((field) => field.name));
const OPTIONAL = byKind((kind) => new Set(numeric(kind).filter((field) => !field.alwaysStored).map((field) => field.name)));
const MEASUREMENTS_AT = byKind((kind) => NUMERIC[kind.name].length - aggregatedFields(kind.name).length);
const DERIVED_AT = byKind((kind) => NUMERIC[kind.name].length - numeric(kind).filter((field) => field.derive !== undefined).length);

/** A kind's numbers per record, in batch order: the common ones, then its measurements, then the derived ones. */
export const numericColumns = (kind: KindName): readonly string[] => NUMERIC[kind];

/** Where a kind's aggregated numbers (aggregatedFields: measurements, then derived) start in numericColumns(kind): they come last. */
export const measurementsAt = (kind: KindName): number => MEASUREMENTS_AT[kind];

/**
 * Where the derived numbers start in numericColumns(kind) (its length when the kind has none): a row
 * without arrays has none of them, so a store may leave those columns out of its insert.
 */
export const derivedAt = (kind: KindName): number => DERIVED_AT[kind];

/** The numeric columns a record may lack (NaN in a batch, NULL or missing in a store). */
export const optionalColumns = (kind: KindName): ReadonlySet<string> => OPTIONAL[kind];

/** Strings per record, the same for every kind (kinds' own fields are numbers). */
export const STRING_COLUMNS: readonly CommonFieldName[] = (Object.keys(COMMON_FIELDS) as CommonFieldName[]).filter(
  (name) => COMMON_FIELDS[name].type === 'string' && COMMON_FIELDS[name].setBy !== 'store',
);
