/**
 * The body of an export: records as CSV or NDJSON text, oldest first, streamed from the store.
 */
import { Readable } from 'node:stream';
import type { StoredRecord } from '../records/kinds.js';

export type ExportFormat = 'csv' | 'ndjson';

/** The answer's body: a stream the reply sends as it is read. */
export function exportBody(rows: AsyncIterable<StoredRecord>, format: ExportFormat, columns: readonly string[]): Readable {
  if (format === 'ndjson') return Readable.from(lines(rows, (record) => `${JSON.stringify(record)}\n`));
  const csvLine = (record: StoredRecord) => `${columns.map((column) => csvCell(record[column])).join(',')}\n`;
  return Readable.from(lines(rows, csvLine, `${columns.join(',')}\n`));
}

export const exportContentType: Record<ExportFormat, string> = { ndjson: 'application/x-ndjson', csv: 'text/csv; charset=utf-8' };

async function* lines(rows: AsyncIterable<StoredRecord>, format: (record: StoredRecord) => string, header?: string) {
  if (header !== undefined) yield header;
  // Join rows into chunks: one write per row would cost more than the rows.
  let chunk = '';
  for await (const record of rows) {
    chunk += format(record);
    if (chunk.length > 64 * 1024) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk !== '') yield chunk;
}

function csvCell(value: string | number | undefined): string {
  if (value === undefined) return '';
  if (typeof value === 'number') return String(value);
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}
