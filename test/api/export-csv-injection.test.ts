/**
 * CSV formula injection (issue 15, item 8): a text a spreadsheet would run as a formula, sent by an
 * unauthenticated producer over the TCP JSON collector or over HTTP, comes back from
 * /export?format=csv as text (a leading single quote, quoted, as OWASP recommends); numbers, negative
 * ones among them, stay numbers; NDJSON gives back what was sent (JSON is not a spreadsheet). The
 * whole service on real sockets, real SQLite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../../src/server.js';
import { eventually, sendChunks } from '../collector/helpers.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

const FORMULA = "=cmd|'/C calc'!A0";

/** The CSV's rows as objects, by its header; cells parsed as RFC 4180 says (quotes, doubled quotes). */
function parseCsv(text: string): Record<string, string>[] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') cell += text[++i];
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') {
      quoted = true;
    } else if (c === ',' || c === '\n') {
      row.push(cell);
      cell = '';
      if (c === '\n') {
        rows.push(row);
        row = [];
      }
    } else {
      cell += c;
    }
  }
  const [header, ...records] = rows;
  return records.map((cells) => Object.fromEntries(header!.map((name, i) => [name, cells[i]!])));
}

describe('CSV exports neutralise formulas', () => {
  let service: Service;
  /** An export's text (call() would parse a one-line NDJSON as JSON). */
  const exported = async (query: string) => {
    const response = await fetch(`${service.url}/api/battery-data/export?${query}`);
    assert.equal(response.status, 200);
    return response.text();
  };
  before(async () => {
    service = await startTestService({}, { collector: true });
  });
  after(() => service.close());

  it('from the TCP JSON collector: the formula comes back as text in CSV, unchanged in NDJSON', async () => {
    const message = { battery_id: 'csv-tcp', source: FORMULA, pack_voltage: 400, pack_current: -12.5, cell_temp: 25 };
    await sendChunks(service.collector!.jsonPort, [Buffer.from(`${JSON.stringify(message)}\n`)]);
    await eventually(async () => (await call(service.url, '/api/battery-data/latest?battery_id=csv-tcp')).status === 200, 'the record is stored');

    const csv = await exported('battery_id=csv-tcp&format=csv');
    assert.ok(csv.includes(`"'=cmd|'/C calc'!A0"`), csv);
    const [record] = parseCsv(csv);
    assert.equal(record!.source, `'${FORMULA}`);
    assert.equal(record!.pack_current, '-12.5', 'a negative number is a number, not a formula');

    assert.equal(JSON.parse(await exported('battery_id=csv-tcp&format=ndjson')).source, FORMULA);
  });

  it('from HTTP: every formula start (= + - @ tab, carriage return) in any text cell, and nothing else', async () => {
    const sources = [FORMULA, '+1+1', '-2+3', '@SUM(A1:A2)', '\t=1+1', '\r=1+1', 'plain, "quoted"', 'a-b=c'];
    const body = sources.map((source, i) => ({ battery_id: '-csv-http', source, pack_voltage: 400 + i, pack_current: -1 - i, cell_temp: 25 }));
    assert.equal((await call(service.url, '/api/battery-data', { body })).status, 200);

    const records = parseCsv(await exported('battery_id=-csv-http&format=csv')).sort((a, b) => Number(a.pack_voltage) - Number(b.pack_voltage));
    const neutralised = (text: string) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);
    assert.deepEqual(
      records.map((record) => record.source),
      sources.map(neutralised),
    );
    // The pack id starts with a minus too: text, so neutralised; the numbers are not.
    assert.ok(records.every((record) => record.battery_id === "'-csv-http"));
    assert.deepEqual(
      records.map((record) => record.pack_current),
      sources.map((_, i) => String(-1 - i)),
    );

    const ndjson = await exported('battery_id=-csv-http&format=ndjson');
    const sent = ndjson.trim().split('\n').map((line) => JSON.parse(line) as { source: string; battery_id: string });
    assert.deepEqual(sent.map((record) => record.source).sort(), [...sources].sort());
    assert.ok(sent.every((record) => record.battery_id === '-csv-http'));
  });
});
