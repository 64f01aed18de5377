/**
 * MAX_CLOCK_SKEW_SECONDS reaches both doors of the all-in-one service: the HTTP API answers 422 and
 * the JSON collector counts the message as `timestamp_out_of_range`, with the same bound. Real
 * sockets, real SQLite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Service } from '../../src/server.js';
import { eventually, sendChunks } from '../collector/helpers.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

const SKEW = 60;

async function metric(service: Service, series: string): Promise<number> {
  const text = (await call<string>(service.url, '/metrics')).body;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe(`with MAX_CLOCK_SKEW_SECONDS=${SKEW}`, () => {
  let service: Service;
  before(async () => {
    service = await startTestService({ maxClockSkewSeconds: SKEW }, { collector: true });
  });
  after(() => service.close());

  it('the HTTP API refuses a timestamp more than a minute ahead, and takes one less', async () => {
    const reading = { pack_voltage: 400, pack_current: 1, cell_temp: 25, battery_id: 'skew-http' };
    const ahead = await call(service.url, '/api/battery-data', { body: { ...reading, timestamp: Date.now() / 1000 + SKEW + 30 } });
    assert.equal(ahead.status, 422);
    assert.deepEqual(ahead.body.detail[0].loc, ['body', 'timestamp']);
    assert.match(ahead.body.detail[0].msg, /MAX_CLOCK_SKEW_SECONDS/);
    assert.equal((await call(service.url, '/api/battery-data', { body: { ...reading, timestamp: Date.now() / 1000 + SKEW - 30 } })).status, 200);
  });

  it('the JSON collector counts what is outside plausible time as timestamp_out_of_range and stores the rest', async () => {
    const now = Date.now() / 1000;
    const message = (timestamp: number, battery_id: string) => `${JSON.stringify({ timestamp, pack_voltage: 400, pack_current: 1, cell_temp: 25, battery_id })}\n`;
    // The values schemathesis had stored, a clock a day ahead (inside the default, outside this setting), and one good reading.
    const text = [message(-8.97e219, 'skew-json'), message(7.8e280, 'skew-json'), message(now + 86_000, 'skew-json'), message(now - 5, 'skew-json-good')].join('');
    await sendChunks(service.collector!.jsonPort, [Buffer.from(text)]);
    await eventually(async () => (await call(service.url, '/api/battery-data/latest?battery_id=skew-json-good')).status === 200, 'the good reading is stored');
    const series = 'collector_rejected_total{listener="json",reason="timestamp_out_of_range"}';
    await eventually(async () => (await metric(service, series)) === 3, `${series} is 3`);
    assert.equal(await metric(service, 'collector_rejected_total{listener="json",reason="invalid_record"}'), 0);
    assert.equal((await call(service.url, '/api/battery-data/latest?battery_id=skew-json')).status, 404);
  });
});
