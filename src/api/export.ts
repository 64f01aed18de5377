/**
 * The body of an export: records as CSV or NDJSON text, oldest first, streamed from the store.
 *
 * An export may cover every stored row, and it shares the event loop with every other request. So
 * the body is pulled: rows are read from the store only as the client takes what was sent (a client
 * that stops reading stops the reading, with at most a chunk or two held here), and the work gives
 * the event loop back every few milliseconds, so that other requests are answered between slices of
 * an export instead of after it.
 */
import { Readable } from 'node:stream';
import { setImmediate } from 'node:timers/promises';
import type { FieldValue, StoredRecord } from '../records/kinds.js';

export type ExportFormat = 'csv' | 'ndjson';

/** Text joined into one write: one write per row would cost more than the rows. Also the body's buffer. */
const CHUNK_BYTES = 64 * 1024;
/** Work between two turns of the event loop: what an export may add to another request's wait. */
const SLICE_MS = 1;

/** The answer's body: a stream the reply sends as it is read. */
export function exportBody(rows: AsyncIterable<StoredRecord>, format: ExportFormat, columns: readonly string[]): Readable {
  const text =
    format === 'ndjson'
      ? lines(rows, (record) => `${JSON.stringify(record)}\n`)
      : lines(rows, (record) => `${columns.map((column) => csvCell(record[column])).join(',')}\n`, `${columns.join(',')}\n`);
  // Bytes, not chunks: what is read ahead of the client stays under CHUNK_BYTES or so.
  return Readable.from(text, { objectMode: false, highWaterMark: CHUNK_BYTES });
}

export const exportContentType: Record<ExportFormat, string> = { ndjson: 'application/x-ndjson', csv: 'text/csv; charset=utf-8' };

async function* lines(rows: AsyncIterable<StoredRecord>, format: (record: StoredRecord) => string, header?: string) {
  let chunk = header ?? '';
  let sliceStart = performance.now();
  for await (const record of rows) {
    chunk += format(record);
    if (chunk.length >= CHUNK_BYTES) {
      yield chunk;
      chunk = '';
    }
    // The store's pages and this loop run in microtasks: without a turn of the event loop here, a
    // client that reads fast would have the whole range formatted before any other request is read.
    if (performance.now() - sliceStart >= SLICE_MS) {
      await setImmediate();
      sliceStart = performance.now();
    }
  }
  if (chunk !== '') yield chunk;
}

/**
 * One CSV cell (RFC 4180). A text cell that a spreadsheet would take for a formula (starting with
 * = + - @, a tab or a carriage return) is neutralised as OWASP recommends: a leading single quote,
 * and quoted, so that it is shown as the text it is. Only text cells: a number such as -12.5 is a
 * number, not a formula, and stays as it is. An array (per-cell readings) is one cell, its numbers
 * joined by `;` (`3.71;3.72;3.69`): no comma, so no quotes, and a spreadsheet splits it on request.
 * A leading minus is no formula risk here either: the cell is numbers only.
 */
function csvCell(value: FieldValue | undefined): string {
  if (value === undefined) return '';
  if (typeof value === 'number') return String(value);
  if (typeof value !== 'string') return value.join(';');
  if (/^[=+\-@\t\r]/.test(value)) return `"'${value.replace(/"/g, '""')}"`;
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}
