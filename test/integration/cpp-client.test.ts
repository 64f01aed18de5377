/**
 * The C++ edge library against the real collector: build it, run its example program against the
 * service's TCP ports, and read every reading back through the HTTP API.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { parseBatteryMap } from '../../src/collector/battery-map.js';
import type { Service } from '../../src/server.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

const run = promisify(execFile);
const CPP = fileURLToPath(new URL('../../clients/cpp/', import.meta.url));

describe('C++ edge library against the collector', () => {
  let service: Service;
  before(async () => {
    await run('make', ['-C', CPP, 'build/send_readings']);
    // Binary frames carry no pack id: the collector maps this peer to one.
    service = await startTestService({ collectorBatteryMap: parseBatteryMap('peer:127.0.0.1=cpp-pack') }, { collector: true });
  });
  after(() => service.close());

  it('delivers every frame and message, decoded to the same values', async () => {
    const collector = service.collector!;
    const frames = 2000;
    const every = 100;
    const { stdout } = await run(`${CPP}build/send_readings`, [
      '--host', '127.0.0.1',
      '--binary-port', String(collector.binaryPort),
      '--json-port', String(collector.jsonPort),
      '--battery-id', 'cpp-pack',
      '--count', String(frames),
      '--rate', '0',
      '--every', String(every),
    ]);
    const messagesPerKind = frames / every;
    assert.match(stdout, new RegExp(`sent ${frames} frames, ${messagesPerKind * 2} messages, dropped 0`));
    // The sender has closed its sockets; wait until the collector has stored all it received.
    for (let tries = 0; tries < 200; tries++) {
      const { body } = await call(service.url, '/api/batteries');
      const counts = body.batteries.find((b: { battery_id: string }) => b.battery_id === 'cpp-pack')?.counts;
      if (counts?.['battery-data'] === frames && counts['battery-performance'] === messagesPerKind && counts['battery-prediction'] === messagesPerKind) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const history = (await call(service.url, `/api/battery-data/history?battery_id=cpp-pack&limit=10000`)).body as Record<string, number>[];
    assert.equal(history.length, frames);
    for (const record of history) {
      for (const field of ['device_time', 'pack_voltage', 'pack_current', 'cell_temp']) assert.ok(Number.isFinite(record[field]), field);
      // float32 on the wire: every value must be exactly representable as a float32.
      assert.equal(Math.fround(record.pack_voltage!), record.pack_voltage);
      assert.ok(record.pack_voltage! > 200 && record.pack_voltage! < 500, `plausible voltage ${record.pack_voltage}`);
    }
    const performance = (await call(service.url, '/api/battery-performance/history?battery_id=cpp-pack&limit=10000')).body;
    const predictions = (await call(service.url, '/api/battery-prediction/history?battery_id=cpp-pack&limit=10000')).body;
    assert.equal(performance.length, messagesPerKind);
    assert.equal(predictions.length, messagesPerKind);
    assert.ok(performance.every((r: { cycle_count: number }) => Number.isInteger(r.cycle_count)));
  });
});
