/**
 * A batch of records of one kind, columnar: what travels from a decoder, or from the HTTP edge,
 * through the ingest sink to a store, and after the commit to the after-commit stage. No object per
 * record on the way: a binary frame writes its floats straight into `numbers`; a JSON message or an
 * HTTP body is appended row by row (`append`). Row objects are made only for answers (`record`).
 *
 * ```
 *  numbers      Float64Array, row-major: numericColumns(kind) per row (timestamp, received_at,
 *               device_time where the kind has a device clock, then the kind's measurements, then
 *               the numbers derived from its arrays); NaN where an optional column is absent, which
 *               every number of a new row is until written
 *  texts        the distinct strings of the batch (a connection's frames share one pack and source)
 *  textIndexes  Uint32Array, STRING_COLUMNS per row (source, battery_id): indexes into texts
 *  keys         per row idempotency key, or null when no row has one
 *  arrays       per row its array fields (per-cell readings) by name, undefined for a row without
 *               any; null when no row has one
 * ```
 *
 * Cost of a row: 8 bytes per number and 4 per string; the strings themselves once per batch. A batch
 * of rows without arrays (every binary frame) pays nothing for them: `arrays` stays null, and the
 * derived numbers stay NaN. The derived numbers of a row with arrays are computed here, when the row
 * is appended: whatever a producer sent for them is no input field and never reaches a batch.
 */
import { derivedAt, numericColumns, optionalColumns, STRING_COLUMNS } from '../records/columns.js';
import {
  arrayFields,
  byKind,
  DEFAULT_BATTERY_ID,
  deriveValue,
  inputFields,
  KINDS,
  recordFields,
  type FieldValue,
  type KindName,
  type RecordField,
  type RecordInput,
  type StoredRecord,
} from '../records/kinds.js';

/** A row's array fields by name: only those it has, each with at least one value. */
export type RowArrays = Readonly<Record<string, readonly number[]>>;

/** Where a field of a row is: a numeric column, a string column (the other is -1), or an array field. */
interface FieldAt {
  readonly name: string;
  readonly number: number;
  readonly text: number;
  readonly array: boolean;
}

/** A derived number: its column, and how it is computed from which array. */
interface DerivedAt {
  readonly column: number;
  readonly field: RecordField;
}

interface Layout {
  readonly columns: readonly string[];
  readonly column: ReadonlyMap<string, number>;
  readonly optional: readonly boolean[];
  readonly fields: ReadonlyMap<string, FieldAt>;
  /** The fields of an API answer, in the table's order. */
  readonly answer: readonly FieldAt[];
  /** The fields a producer sends, in the table's order: the API's input. */
  readonly input: readonly FieldAt[];
  /** The kind's array fields' names. */
  readonly arrays: readonly string[];
  readonly derived: readonly DerivedAt[];
  /** derivedAt(kind): the derived numbers' first column. */
  readonly derivedAt: number;
}

const TEXT_COLUMNS = STRING_COLUMNS.length;
const SOURCE = STRING_COLUMNS.indexOf('source');
const BATTERY_ID = STRING_COLUMNS.indexOf('battery_id');

function layoutOf(kind: KindName): Layout {
  const columns = numericColumns(kind);
  const optional = optionalColumns(kind);
  const column = new Map(columns.map((name, index) => [name, index]));
  const texts = STRING_COLUMNS as readonly string[];
  const fields = new Map<string, FieldAt>();
  const arrays = arrayFields(kind).map((field) => field.name);
  for (const field of recordFields(kind)) {
    if (column.has(field.name) || texts.includes(field.name) || arrays.includes(field.name)) {
      fields.set(field.name, {
        name: field.name,
        number: column.get(field.name) ?? -1,
        text: texts.indexOf(field.name),
        array: arrays.includes(field.name),
      });
    }
  }
  const answer = [...fields.values()];
  const input = inputFields(kind).map((field) => fields.get(field.name)!);
  const derived = recordFields(kind)
    .filter((field) => field.derive !== undefined)
    .map((field) => ({ column: column.get(field.name)!, field }));
  return { columns, column, optional: columns.map((name) => optional.has(name)), fields, answer, input, arrays, derived, derivedAt: derivedAt(kind) };
}

const LAYOUTS = byKind((kind) => layoutOf(kind.name));

/** Where a kind's numbers sit in a row of its batches: `numbers[row * width + columnIndex(kind, name)]`. */
export function columnIndex(kind: KindName, name: string): number {
  const index = LAYOUTS[kind].column.get(name);
  if (index === undefined) throw new Error(`${kind} records have no numeric column ${name}`);
  return index;
}

export class RecordBatch {
  readonly kind: KindName;
  /** Numbers per row. */
  readonly width: number;
  readonly #layout: Layout;
  #length = 0;
  #capacity: number;
  numbers: Float64Array;
  readonly texts: string[] = [];
  textIndexes: Uint32Array;
  keys: (string | null)[] | null = null;
  arrays: (RowArrays | undefined)[] | null = null;
  readonly #textIndex = new Map<string, number>();
  // The strings of the last row: consecutive rows (a connection's frames) mostly repeat them.
  #lastBatteryId: string | undefined;
  #lastBatteryIdIndex = 0;
  #lastSource: string | undefined;
  #lastSourceIndex = 0;

  /** `capacity`: rows to make room for at once (it grows as needed). */
  constructor(kind: KindName, capacity = 16) {
    this.kind = kind;
    this.#layout = LAYOUTS[kind];
    this.width = this.#layout.columns.length;
    this.#capacity = Math.max(1, capacity);
    this.numbers = new Float64Array(this.#capacity * this.width).fill(NaN);
    this.textIndexes = new Uint32Array(this.#capacity * TEXT_COLUMNS);
  }

  get length(): number {
    return this.#length;
  }

  /**
   * Adds a row for the given pack and source and answers where its numbers start in `numbers`; the
   * caller writes those the row has (all NaN until then: absent).
   */
  addRow(batteryId: string, source: string): number {
    if (this.#length === this.#capacity) this.#grow();
    const row = this.#length++;
    if (batteryId !== this.#lastBatteryId) {
      this.#lastBatteryId = batteryId;
      this.#lastBatteryIdIndex = this.#text(batteryId);
    }
    if (source !== this.#lastSource) {
      this.#lastSource = source;
      this.#lastSourceIndex = this.#text(source);
    }
    this.textIndexes[row * TEXT_COLUMNS + BATTERY_ID] = this.#lastBatteryIdIndex;
    this.textIndexes[row * TEXT_COLUMNS + SOURCE] = this.#lastSourceIndex;
    if (this.keys !== null) this.keys.push(null);
    if (this.arrays !== null) this.arrays.push(undefined);
    return row * this.width;
  }

  /**
   * Appends a validated record as a producer sent it, with the server's defaults for what it left
   * out: timestamp `receivedAt`, the kind's source, pack "default".
   */
  append(input: RecordInput, receivedAt: number, key?: string): void {
    const at = this.addRow(input.battery_id ?? DEFAULT_BATTERY_ID, input.source ?? KINDS[this.kind].defaultSource);
    const { columns, derivedAt } = this.#layout;
    // The derived numbers (last) are the server's own: left NaN here, computed from the arrays below.
    for (let c = 0; c < derivedAt; c++) {
      const name = columns[c]!;
      const value = name === 'received_at' ? receivedAt : name === 'timestamp' ? (input.timestamp ?? receivedAt) : input[name];
      // Validation let only finite numbers through; an absent optional column is NaN (NULL when stored).
      this.numbers[at + c] = typeof value === 'number' ? value : NaN;
    }
    if (key !== undefined) this.#setKey(this.#length - 1, key);
    if (this.#layout.arrays.length > 0) this.#setArrays(this.#length - 1, input);
  }

  /** Appends row `row` of another batch of the same kind. */
  appendRowOf(from: RecordBatch, row: number): void {
    const at = this.addRow(from.batteryId(row), from.source(row));
    const source = row * from.width;
    for (let c = 0; c < this.width; c++) this.numbers[at + c] = from.numbers[source + c]!;
    const key = from.key(row);
    if (key !== undefined) this.#setKey(this.#length - 1, key);
    const arrays = from.arrays?.[row];
    if (arrays !== undefined) this.#rowArrays()[this.#length - 1] = arrays;
  }

  number(row: number, column: number): number {
    return this.numbers[row * this.width + column]!;
  }

  timestamp(row: number): number {
    return this.numbers[row * this.width]!;
  }

  batteryId(row: number): string {
    return this.texts[this.textIndexes[row * TEXT_COLUMNS + BATTERY_ID]!]!;
  }

  source(row: number): string {
    return this.texts[this.textIndexes[row * TEXT_COLUMNS + SOURCE]!]!;
  }

  key(row: number): string | undefined {
    return this.keys?.[row] ?? undefined;
  }

  /** Index of the row's pack in `texts`: rows of one pack share it. */
  batteryIdIndex(row: number): number {
    return this.textIndexes[row * TEXT_COLUMNS + BATTERY_ID]!;
  }

  /** A field of a row, common or the kind's own, by name; undefined when the row lacks it. */
  value(row: number, name: string): FieldValue | undefined {
    const field = this.#layout.fields.get(name);
    return field === undefined ? undefined : this.#valueAt(row, field);
  }

  /** The API shape of a row, with its store id: fields in the table's order, absent ones left out. */
  record(row: number, id: string): StoredRecord {
    const record = { _id: id } as StoredRecord;
    for (const field of this.#layout.answer) {
      const value = this.#valueAt(row, field);
      if (value !== undefined) record[field.name] = value;
    }
    return record;
  }

  /** A row as a producer would send it: what POST /api/{kind} takes. */
  input(row: number): RecordInput {
    const input: RecordInput = {};
    for (const field of this.#layout.input) {
      const value = this.#valueAt(row, field);
      if (value !== undefined) input[field.name] = value;
    }
    return input;
  }

  #valueAt(row: number, field: FieldAt): FieldValue | undefined {
    if (field.array) return this.arrays?.[row]?.[field.name];
    if (field.text >= 0) return this.texts[this.textIndexes[row * TEXT_COLUMNS + field.text]!];
    const value = this.numbers[row * this.width + field.number]!;
    return Number.isNaN(value) && this.#layout.optional[field.number] ? undefined : value;
  }

  #text(value: string): number {
    let index = this.#textIndex.get(value);
    if (index === undefined) {
      index = this.texts.push(value) - 1;
      this.#textIndex.set(value, index);
    }
    return index;
  }

  /**
   * Keeps the row's arrays (an empty one is absent) and computes what is derived from them. The
   * arrays are the producer's own objects, validated: kept, not copied.
   */
  #setArrays(row: number, input: RecordInput): void {
    let arrays: Record<string, readonly number[]> | undefined;
    for (const name of this.#layout.arrays) {
      const values = input[name];
      if (!Array.isArray(values) || values.length === 0) continue;
      (arrays ??= {})[name] = values;
    }
    if (arrays === undefined) return;
    this.#rowArrays()[row] = arrays;
    const at = row * this.width;
    for (const { column, field } of this.#layout.derived) {
      const values = arrays[field.derive!.from];
      if (values !== undefined) this.numbers[at + column] = deriveValue(field, values);
    }
  }

  #rowArrays(): (RowArrays | undefined)[] {
    return (this.arrays ??= new Array<RowArrays | undefined>(this.#length).fill(undefined));
  }

  #setKey(row: number, key: string): void {
    this.keys ??= new Array<string | null>(this.#length).fill(null);
    this.keys[row] = key;
  }

  #grow(): void {
    this.#capacity *= 2;
    const numbers = new Float64Array(this.#capacity * this.width);
    numbers.set(this.numbers);
    numbers.fill(NaN, this.numbers.length);
    this.numbers = numbers;
    const textIndexes = new Uint32Array(this.#capacity * TEXT_COLUMNS);
    textIndexes.set(this.textIndexes);
    this.textIndexes = textIndexes;
  }
}
