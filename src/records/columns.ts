/**
 * The columnar layout of records, derived from the kinds table: how a batch of records of one kind
 * travels from a decoder to a store without an object per record. Each record is one row of
 * `numericColumns(kind)` numbers, in that fixed order (the common numbers first, then the kind's own
 * measurements in the table's order), and one row of STRING_COLUMNS strings. The store's key is no
 * column: the store assigns it. A numeric column that a record may lack (`optionalColumns`) holds
 * NaN for "absent": every number that is present is finite, as validation and decoding ensure.
 */
import { byKind, COMMON_FIELDS, recordFields, type CommonFieldName, type KindName, type KindSpec } from './kinds.js';

const written = (kind: KindSpec) => recordFields(kind.name).filter((field) => field.setBy !== 'store');

const NUMERIC = byKind((kind) => written(kind).filter((field) => field.type !== 'string').map((field) => field.name));
const OPTIONAL = byKind((kind) => new Set(written(kind).filter((field) => !field.alwaysStored).map((field) => field.name)));
const MEASUREMENTS_AT = byKind((kind) => NUMERIC[kind.name].length - Object.keys(kind.fields).length);

/** A kind's numbers per record, in batch order: the common ones, then its measurements. */
export const numericColumns = (kind: KindName): readonly string[] => NUMERIC[kind];

/** Where a kind's own measurements start in numericColumns(kind): they come last. */
export const measurementsAt = (kind: KindName): number => MEASUREMENTS_AT[kind];

/** The numeric columns a record may lack (NaN in a batch, NULL or missing in a store). */
export const optionalColumns = (kind: KindName): ReadonlySet<string> => OPTIONAL[kind];

/** Strings per record, the same for every kind (kinds' own fields are numbers). */
export const STRING_COLUMNS: readonly CommonFieldName[] = (Object.keys(COMMON_FIELDS) as CommonFieldName[]).filter(
  (name) => COMMON_FIELDS[name].type === 'string' && COMMON_FIELDS[name].setBy !== 'store',
);
