/**
 * The C++ edge library against the real collector: build it, run its example program against the
 * service's TCP ports, and read every reading back through the HTTP API.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:net';
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
    await run('make', ['-C', CPP, 'build/send_readings', 'build/event_loop']);
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

  it('readings with cells: JSON messages on the JSON port, stored with every cell', async () => {
    const collector = service.collector!;
    const readings = 200;
    const cells = 96;
    const { stdout } = await run(`${CPP}build/send_readings`, [
      '--host', '127.0.0.1',
      '--binary-port', String(collector.binaryPort),
      '--json-port', String(collector.jsonPort),
      '--battery-id', 'cpp-cells',
      '--count', String(readings),
      '--rate', '0',
      '--every', String(readings),
      '--cells', String(cells),
    ]);
    // The readings, then one performance record and one prediction; no frames.
    assert.match(stdout, new RegExp(`sent 0 frames, ${readings + 2} messages, dropped 0`));
    let stored = 0;
    for (let tries = 0; tries < 200; tries++) {
      const { body } = await call(service.url, '/api/batteries');
      stored = body.batteries.find((b: { battery_id: string }) => b.battery_id === 'cpp-cells')?.counts?.['battery-data'] ?? 0;
      if (stored >= readings) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(stored, readings);
    const history = (await call(service.url, '/api/battery-data/history?battery_id=cpp-cells&limit=10000')).body as Record<string, unknown>[];
    assert.equal(history.length, readings);
    for (const record of history) {
      const volts = record.cell_voltages as number[];
      const temps = record.cell_temps as number[];
      assert.ok(Array.isArray(volts) && Array.isArray(temps), 'cells missing from a stored reading');
      assert.equal(volts.length, cells);
      assert.equal(temps.length, cells);
      assert.ok(volts.every((v) => v > 2.5 && v < 4.5) && temps.every((t) => Number.isFinite(t)), 'implausible cells');
      // The simulator's pack voltage is the sum of its cells, so cells that belong to another reading would not add up.
      const sum = volts.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - (record.pack_voltage as number)) < 0.001, `cells sum to ${sum}, pack ${record.pack_voltage}`);
      assert.equal(record.cell_voltage_delta, Math.max(...volts) - Math.min(...volts));
    }
  });

  it('the event-loop example: readings from its input, through its own poll loop, confirmed by the collector', async () => {
    const collector = service.collector!;
    const readings = 300;
    const storedFrames = async (): Promise<number> => {
      const { body } = await call(service.url, '/api/batteries');
      return body.batteries.find((b: { battery_id: string }) => b.battery_id === 'cpp-pack')?.counts?.['battery-data'] ?? 0;
    };
    const before = await storedFrames();
    const child = spawn(`${CPP}build/event_loop`, ['--host', '127.0.0.1', '--binary-port', String(collector.binaryPort)]);
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // Sent in pieces, so the loop also runs while waiting for input.
    for (let i = 0; i < readings; i += 100) {
      child.stdin.write(Array.from({ length: 100 }, (_, k) => `${i + k} ${350 + (i + k) / 8} -20.5 31.25\n`).join(''));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    child.stdin.end();
    assert.equal(await exited, 0);
    assert.match(stdout, new RegExp(`sent ${readings} frames, dropped 0, confirmed yes`));
    let stored = 0;
    for (let tries = 0; tries < 200 && (stored = await storedFrames()) < before + readings; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(stored, before + readings);
  });

  it('exits 1 and says why when nothing listens, within its timeout', async () => {
    // A port that was free a moment ago: connections to it are refused.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    const failed = await run(`${CPP}build/send_readings`, [
      '--host', '127.0.0.1', '--binary-port', String(port), '--json-port', String(port), '--count', '20', '--rate', '0', '--timeout', '0.5',
    ]).then(() => undefined, (error: { code: number; stdout: string; stderr: string }) => error);
    assert.ok(failed, 'send_readings succeeded with nothing listening');
    assert.equal(failed.code, 1);
    assert.match(failed.stdout, /sent 0 frames, 0 messages, dropped 0/);
    assert.match(failed.stderr, /not everything was delivered .* last error: connect failed, errno \d+\)/);
  });
});
