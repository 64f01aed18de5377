/**
 * The outbox through kill -9, and secrets kept out of the log: the service as a real child process
 * (test/support/child-service.ts) on SQLite and on a MongoDB-wire server, webhooks received by real
 * local HTTP servers.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { verifySignature } from '../../src/alarms/notifications.js';
import { spawnService, type ChildService } from '../support/child-service.js';
import { call } from '../support/helper.js';
import { mongoForTests } from '../support/mongo-server.js';
import { tempDir } from '../support/temp-dir.js';
import { startReceiver, type Receiver } from './webhook-receiver.js';

const BASE = Math.floor(Date.now() / 1000) - 3600;
const PACKS = ['kill-1', 'kill-2', 'kill-3', 'kill-4', 'kill-5'];
const SECRET = 'kill-test-secret-0123456789';

const receivers: Receiver[] = [];
const children: ChildService[] = [];
// Registered before the server's: the services go before their database does.
after(async () => {
  for (const child of children) if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL');
  for (const receiver of receivers) await receiver.close();
});
const { server, freshDatabase } = await mongoForTests('webhooks_kill');

async function receiver(path?: string): Promise<Receiver> {
  const started = await startReceiver(path);
  receivers.push(started);
  return started;
}

async function spawn(env: Record<string, string>): Promise<ChildService> {
  const child = await spawnService(['serve'], { COLLECTOR_BINARY_PORT: '0', COLLECTOR_JSON_PORT: '0', COLLECTOR_V2_PORT: '0', COLLECTOR_HOST: '127.0.0.1', ...env });
  children.push(child);
  return child;
}

async function stop(child: ChildService): Promise<void> {
  child.child.kill('SIGTERM');
  await child.exited;
}

async function ok(url: string, path: string, body?: unknown): Promise<any> {
  const answer = await call(url, path, body === undefined ? {} : { body });
  assert.ok(answer.status < 300, `${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const stores: [string, () => Record<string, string>][] = [
  ['sqlite', () => ({ DATA_DIR: tempDir() })],
  [
    'mongodb',
    () => ({ MONGODB_URI: server.uri, DATABASE_NAME: freshDatabase(), DATA_DIR: tempDir() }),
  ],
];

for (const [name, storeEnv] of stores) {
  describe(`webhooks through kill -9 on ${name}`, () => {
    it('delivers every notification in the outbox after kill -9 and a restart on the same store: none lost, in order per alarm', async () => {
      const fromApi = await receiver('/api-hook');
      const fromConfig = await receiver('/config-hook?token=kill-token');
      // Both hang: every notification is sent and none answered, so all are in the outbox when the process dies.
      fromApi.answer = 'hold';
      fromConfig.answer = 'hold';
      const env = { ...storeEnv(), WEBHOOK_URLS: fromConfig.url };
      const first = await spawn(env);
      await ok(first.url, '/api/alarm-rules', {
        name: 'kill test voltage',
        type: 'threshold',
        kind: 'battery-data',
        field: 'pack_voltage',
        warning: { above: 420 },
        critical: { above: 430 },
      });
      const webhook = await ok(first.url, '/api/webhooks', { url: fromApi.url, secret: SECRET });
      for (const [i, pack] of PACKS.entries()) {
        await ok(first.url, '/api/battery-data', { timestamp: BASE + i, battery_id: pack, pack_voltage: 435, pack_current: -10, cell_temp: 25 });
      }
      await until(() => fromApi.held.length === PACKS.length && fromConfig.held.length === PACKS.length, 'every raise sent to both receivers');
      // One more change per alarm of kill-1, queued behind its raise (order per alarm): stored, not sent.
      const [alarm] = (await ok(first.url, '/api/alarms?state=open&battery_id=kill-1')).alarms;
      await ok(first.url, `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`, { by: 'test', note: 'kill -9 next' });
      first.child.kill('SIGKILL');
      await first.exited;
      for (const held of [...fromApi.held.splice(0), ...fromConfig.held.splice(0)]) held.destroy();
      fromApi.answer = 200;
      fromConfig.answer = 200;

      const second = await spawn(env);
      try {
        const expected = [...PACKS.map((pack) => `${pack}:alarm.raised`), 'kill-1:alarm.acknowledged'].sort();
        const got = (r: Receiver) => [...new Set(r.received.map((x) => `${x.json.pack.battery_id}:${x.json.type}`))].sort();
        await until(() => got(fromApi).length >= expected.length && got(fromConfig).length >= expected.length, 'every notification after the restart');
        assert.deepEqual(got(fromApi), expected);
        assert.deepEqual(got(fromConfig), expected);
        for (const r of fromApi.received) assert.ok(verifySignature(SECRET, r.body, r.headers['x-signature-256'] as string));
        for (const r of [fromApi, fromConfig]) {
          const kill1 = r.received.filter((x) => x.json.pack.battery_id === 'kill-1').map((x) => x.json.type);
          assert.equal(kill1.at(-1), 'alarm.acknowledged', 'the acknowledgement after the raise');
        }
        // Each delivered (the state is stored a moment after the receiver has the request).
        let deliveries: any[] = [];
        await until(async () => {
          deliveries = (await ok(second.url, `/api/webhooks/${webhook.id}/deliveries`)).deliveries;
          return deliveries.length === expected.length && deliveries.every((d: any) => d.state === 'delivered');
        }, `every delivery marked delivered: ${JSON.stringify(deliveries.map((d: any) => d.state))}`);
        // Nothing raised twice: one alarm per pack.
        assert.equal((await ok(second.url, '/api/alarms?state=open')).alarms.filter((a: any) => a.battery_id.startsWith('kill-')).length, PACKS.length);
      } finally {
        await stop(second);
      }
    });
  });
}

describe('webhook secrets and tokens in the log', () => {
  it('never logs a webhook secret or a URL token, while a receiver refuses the signature', async () => {
    const refusing = await receiver('/hook/T0KEN-IN-PATH?token=T0KEN-IN-QUERY');
    const configured = await receiver('/config/C0NFIG-TOKEN');
    refusing.answer = 401;
    configured.answer = 401;
    const child = await spawn({ DATA_DIR: tempDir(), WEBHOOK_URLS: configured.url });
    try {
      await ok(child.url, '/api/alarm-rules', {
        name: 'log test',
        type: 'threshold',
        kind: 'battery-data',
        field: 'pack_voltage',
        critical: { above: 430 },
        battery_id: 'log-1',
      });
      const created = await ok(child.url, '/api/webhooks', { url: refusing.url, secret: 'BAD-SIGNATURE-SECRET-42' });
      await ok(child.url, '/api/battery-data', { timestamp: BASE, battery_id: 'log-1', pack_voltage: 435, pack_current: -10, cell_temp: 25 });
      await until(() => refusing.received.length >= 2 && configured.received.length >= 2, 'a refused attempt and its retry');
      await until(() => child.lines.some((line) => line.includes('did not take a notification')), 'the failure logged');
      const log = child.lines.join('\n');
      for (const secret of [created.secret, 'T0KEN-IN-PATH', 'T0KEN-IN-QUERY', 'C0NFIG-TOKEN']) assert.ok(!log.includes(secret), `${secret} is in the log`);
      assert.ok(log.includes(new URL(refusing.url).origin), 'the receiver is named by its origin');
      const deliveries = JSON.stringify(await ok(child.url, `/api/webhooks/${created.id}/deliveries`));
      const listed = JSON.stringify(await ok(child.url, '/api/webhooks'));
      for (const secret of [created.secret, 'T0KEN-IN-PATH', 'T0KEN-IN-QUERY', 'C0NFIG-TOKEN']) {
        assert.ok(!deliveries.includes(secret) && !listed.includes(secret), `${secret} is in an answer`);
      }
      assert.match(deliveries, /HTTP 401/);
    } finally {
      await stop(child);
    }
    assert.ok(!child.lines.join('\n').includes('BAD-SIGNATURE-SECRET-42'));
  });
});
