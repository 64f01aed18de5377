/**
 * Alarm changes as SSE text for /api/stream (src/alarms/alarm-stream.ts), through the service: readings
 * posted, alarms raised after commit, the stream's text as a subscriber gets it: through the function,
 * then through a real /api/stream on a socket.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { subscribeAlarmEvents } from '../../src/alarms/alarm-stream.js';
import { buildApp, call, listen } from '../support/helper.js';

const BASE = Math.floor(Date.now() / 1000) - 600;

/** The events of SSE text: [event name, parsed data]. */
const parse = (text: string) =>
  text
    .split('\n\n')
    .filter((block) => block !== '')
    .map((block) => {
      const lines = block.split('\n');
      return [lines.find((l) => l.startsWith('event: '))!.slice(7), JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice(6))] as const;
    });

describe('alarm events for the live stream', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
    const body = { name: 'hot', type: 'threshold', kind: 'battery-data', field: 'pack_voltage', warning: { above: 420 }, critical: { above: 430 } };
    assert.equal((await call(app, '/api/alarm-rules', { body })).status, 201);
  });
  after(() => app.close());

  it("writes each stored change as `event: alarm` with the event and the alarm after it, honouring the stream's battery_id filter", async () => {
    let all = '';
    let one = '';
    const stopAll = subscribeAlarmEvents(app.alarms, { write: (text) => ((all += text), 0), drop: () => assert.fail('not dropped') });
    const stopOne = subscribeAlarmEvents(app.alarms, { batteryId: 'sse-2', write: (text) => ((one += text), 0), drop: () => assert.fail('not dropped') });
    const reading = (battery_id: string, dt: number, pack_voltage: number) => ({ timestamp: BASE + dt, battery_id, pack_voltage, pack_current: -1, cell_temp: 25 });
    await call(app, '/api/battery-data', { body: [reading('sse-1', 0, 435), reading('sse-2', 0, 425)] });
    await call(app, '/api/battery-data', { body: [reading('sse-2', 1, 400)] });
    const deadline = Date.now() + 10_000;
    while (parse(all).length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    stopAll();
    stopOne();
    const events = parse(all);
    assert.deepEqual(
      events.map(([name, data]) => [name, data.alarm.battery_id, data.event.type, data.alarm.state, data.alarm.severity]),
      [
        ['alarm', 'sse-1', 'raised', 'active', 'critical'],
        ['alarm', 'sse-2', 'raised', 'active', 'warning'],
        ['alarm', 'sse-2', 'cleared', 'cleared', 'warning'],
      ],
    );
    assert.deepEqual(
      parse(one).map(([, data]) => [data.alarm.battery_id, data.event.type]),
      [
        ['sse-2', 'raised'],
        ['sse-2', 'cleared'],
      ],
    );
  });

  it('drops a subscriber too far behind', async () => {
    let dropped = false;
    const stop = subscribeAlarmEvents(app.alarms, { write: () => Number.MAX_SAFE_INTEGER, drop: () => (dropped = true) });
    await call(app, '/api/battery-data', { body: { timestamp: BASE + 5, battery_id: 'sse-3', pack_voltage: 435, pack_current: -1, cell_temp: 25 } });
    const deadline = Date.now() + 10_000;
    while (!dropped && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    stop();
    assert.ok(dropped);
  });
});

describe('alarm events on a real /api/stream', () => {
  it('a subscriber of one pack gets `event: alarm` when a reading past critical raises an alarm, and not those of other packs', async (t) => {
    const app = await buildApp();
    t.after(() => app.close());
    const url = await listen(app);
    const rule = { name: 'hot pack', type: 'threshold', kind: 'battery-data', field: 'pack_voltage', warning: { above: 420 }, critical: { above: 430 } };
    assert.equal((await call(app, '/api/alarm-rules', { body: rule })).status, 201);

    const controller = new AbortController();
    t.after(() => controller.abort());
    const response = await fetch(`${url}/api/stream?battery_id=pack-live`, { signal: controller.signal });
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    let text = '';
    const read = async () => {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended:\n${text}`);
      text += new TextDecoder().decode(value);
    };
    await read(); // ": connected": subscribed from here on

    const reading = (battery_id: string, pack_voltage: number) => ({ timestamp: BASE + 500, battery_id, pack_voltage, pack_current: -5, cell_temp: 25 });
    assert.equal((await call(app, '/api/battery-data', { body: [reading('pack-other', 440), reading('pack-live', 440)] })).status, 200);
    const deadline = Date.now() + 10_000;
    while (!/event: alarm\n/.test(text)) {
      assert.ok(Date.now() < deadline, `no alarm event within 10 s:\n${text}`);
      await read();
    }
    const alarms = parse(text.slice(text.indexOf('event: alarm\n'), text.lastIndexOf('\n\n') + 2)).filter(([name]) => name === 'alarm');
    assert.ok(alarms.length >= 1);
    for (const [, data] of alarms) assert.equal(data.alarm.battery_id, 'pack-live');
    assert.equal(alarms[0]![1].alarm.severity, 'critical');
  });
});
