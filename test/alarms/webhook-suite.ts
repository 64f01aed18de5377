/**
 * Webhook notifications through the service, written once and run against each store
 * (webhooks-sqlite.test.ts, webhooks-mongodb.test.ts): readings posted over HTTP, alarms raised after
 * commit, notifications POSTed to a real local HTTP server (webhook-receiver.ts) and read back through
 * /api/webhooks. Each test watches packs of its own and has a receiver of its own.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { verifySignature } from '../../src/alarms/notifications.js';
import { configWebhookId, MAX_WEBHOOKS, PER_RECEIVER_CONCURRENCY } from '../../src/alarms/webhook-dispatcher.js';
import type { Config } from '../../src/config.js';
import { buildApp, call } from '../support/helper.js';
import type { StoreSettings } from './alarm-suite.js';
import { startReceiver, type Received, type Receiver } from './webhook-receiver.js';

const BASE = Math.floor(Date.now() / 1000) - 7200;
const DASHBOARD = 'http://dashboard.test:8000';
const CONFIG_SECRET = 'config-secret-0123456789';

async function post(app: FastifyInstance, batteryId: string, pairs: [number, number][]): Promise<void> {
  const body = pairs.map(([dt, volts]) => ({ timestamp: BASE + dt, battery_id: batteryId, pack_voltage: volts, pack_current: -10, cell_temp: 25 }));
  const answer = await call(app, '/api/battery-data', { body });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

/** A voltage rule for one pack, inside the default band (330..440) so that only it fires. */
async function voltageRule(app: FastifyInstance, batteryId: string): Promise<any> {
  const body = { name: `voltage of ${batteryId}`, type: 'threshold', kind: 'battery-data', field: 'pack_voltage', warning: { above: 420 }, critical: { above: 430 }, battery_id: batteryId };
  const answer = await call(app, '/api/alarm-rules', { body });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body;
}

async function addWebhook(app: FastifyInstance, body: object): Promise<any> {
  const answer = await call(app, '/api/webhooks', { body });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body;
}

/** A webhook's deliveries of one pack once every one is `state`: the receiver has the request a moment before the state is stored. */
async function deliveriesOf(app: FastifyInstance, webhookId: string, batteryId: string, count: number, state = 'delivered'): Promise<any[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const answer = await call(app, `/api/webhooks/${webhookId}/deliveries`);
    assert.equal(answer.status, 200);
    const mine = answer.body.deliveries.filter((d: any) => d.battery_id === batteryId);
    if (mine.length === count && mine.every((d: any) => d.state === state)) return mine;
    if (Date.now() > deadline) assert.fail(`deliveries of ${batteryId}: ${JSON.stringify(mine.map((d: any) => [d.type, d.state]))}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const of = (from: Receiver | Received[], batteryId: string) =>
  (Array.isArray(from) ? from : from.received).filter((r) => r.json?.pack?.battery_id === batteryId);

export function webhookSuite(name: string, settings: StoreSettings): void {
  describe(`webhooks on ${name}`, () => {
    let app: FastifyInstance;
    let configReceiver: Receiver;
    const receivers: Receiver[] = [];
    const receiver = async () => {
      const started = await startReceiver();
      receivers.push(started);
      return started;
    };
    before(async () => {
      configReceiver = await startReceiver('/config-hook?token=config-token-xyz');
      // publicUrl and webhookSecret: the settings PUBLIC_URL and WEBHOOK_SECRET, read by the alarms plugin once config.ts has them.
      app = await buildApp({ ...settings.fresh(), webhookUrls: [configReceiver.url], publicUrl: DASHBOARD, webhookSecret: CONFIG_SECRET } as Partial<Config>);
    });
    after(async () => {
      await app.close();
      for (const r of [configReceiver, ...receivers]) await r.close();
    });

    it('signs each notification: X-Signature-256 is the HMAC-SHA256 of the raw body with the secret; the payload holds the alarm, the pack and its link, the trigger, an event id', async () => {
      const target = await receiver();
      const secret = 'a-secret-of-my-own-0123456789';
      const created = await addWebhook(app, { url: target.url, secret });
      assert.equal(created.secret, secret);
      const rule = await voltageRule(app, 'wh-sign');
      await post(app, 'wh-sign', [[0, 400], [1, 435]]);
      await target.until((r) => of(r, 'wh-sign').length >= 1, 'the raise');
      const [raised] = of(target, 'wh-sign');
      assert.ok(verifySignature(secret, raised!.body, raised!.headers['x-signature-256'] as string));
      assert.match(raised!.headers['x-signature-256'] as string, /^sha256=[0-9a-f]{64}$/);
      assert.ok(!verifySignature('another secret entirely', raised!.body, raised!.headers['x-signature-256'] as string));
      assert.equal(raised!.headers['content-type'], 'application/json');
      const payload = raised!.json;
      assert.equal(payload.type, 'alarm.raised');
      assert.equal(payload.event_id, `${rule.id}~wh-sign~1~1`);
      assert.equal(raised!.headers['x-event-id'], payload.event_id);
      assert.equal(payload.alarm.id, `${rule.id}~wh-sign~1`);
      assert.equal(payload.alarm.severity, 'critical');
      assert.equal(payload.event.type, 'raised');
      assert.deepEqual(payload.pack, { battery_id: 'wh-sign', url: `${DASHBOARD}/#/pack/wh-sign` });
      assert.deepEqual(payload.trigger, {
        kind: 'battery-data',
        field: 'pack_voltage',
        rule_type: 'threshold',
        value: 435,
        at: BASE + 1,
        warning: { above: 420 },
        critical: { above: 430 },
        hysteresis: 0,
      });
      // WEBHOOK_URLS: signed with WEBHOOK_SECRET.
      await configReceiver.until((r) => of(r, 'wh-sign').length >= 1, 'the raise at the WEBHOOK_URLS receiver');
      const [fromConfig] = of(configReceiver, 'wh-sign');
      assert.ok(verifySignature(CONFIG_SECRET, fromConfig!.body, fromConfig!.headers['x-signature-256'] as string));
      assert.equal(fromConfig!.url, '/config-hook?token=config-token-xyz');
    });

    it('delivers every change type in order per alarm: raised, escalated, deescalated, acknowledged, cleared', async () => {
      const target = await receiver();
      const webhook = await addWebhook(app, { url: target.url });
      await voltageRule(app, 'wh-order');
      await post(app, 'wh-order', [[0, 400], [1, 425]]);
      await post(app, 'wh-order', [[2, 435]]);
      await post(app, 'wh-order', [[3, 425]]);
      await target.until((r) => of(r, 'wh-order').length >= 3, 'three changes');
      const alarmId = of(target, 'wh-order')[0]!.json.alarm.id;
      const ack = await call(app, `/api/alarms/${encodeURIComponent(alarmId)}/acknowledge`, { body: { by: 'night shift', note: 'on it' } });
      assert.equal(ack.status, 200, JSON.stringify(ack.body));
      await post(app, 'wh-order', [[4, 400]]);
      await target.until((r) => of(r, 'wh-order').length >= 5, 'five changes');
      const got = of(target, 'wh-order');
      assert.deepEqual(
        got.map((r) => [r.json.type, r.json.event.seq, r.json.alarm.state]),
        [
          ['alarm.raised', 1, 'active'],
          ['alarm.escalated', 2, 'active'],
          ['alarm.deescalated', 3, 'active'],
          ['alarm.acknowledged', 4, 'acknowledged'],
          ['alarm.cleared', 5, 'cleared'],
        ],
      );
      assert.equal(got[3]!.json.event.by, 'night shift');
      assert.equal(got[4]!.json.trigger.value, 400);
      for (const r of got) assert.ok(verifySignature(webhook.secret, r.body, r.headers['x-signature-256'] as string));
      // The deliveries, newest first, each delivered at its first attempt with the receiver's answer.
      const mine = await deliveriesOf(app, webhook.id, 'wh-order', 5);
      assert.deepEqual(
        mine.map((d: any) => [d.type, d.state, d.attempt_count, d.attempts[0].status, d.attempts[0].error]),
        ['cleared', 'acknowledged', 'deescalated', 'escalated', 'raised'].map((type) => [type, 'delivered', 1, 200, null]),
      );
      assert.equal(mine[0].body, undefined);
    });

    it('retries a receiver that is down for a while, with backoff, in order, until it is back; the deliveries show each attempt', async () => {
      const target = await receiver();
      const webhook = await addWebhook(app, { url: target.url });
      target.answer = 503;
      await voltageRule(app, 'wh-down');
      await post(app, 'wh-down', [[0, 400], [1, 425]]);
      await post(app, 'wh-down', [[2, 435]]);
      // Down: the raise is tried and retried; the escalation waits behind it (order per alarm).
      await target.until((r) => of(r, 'wh-down').length >= 2, 'two failed attempts', 30_000);
      assert.deepEqual(
        of(target, 'wh-down').map((r) => r.json.type),
        ['alarm.raised', 'alarm.raised'],
      );
      const pending = (await call(app, `/api/webhooks/${webhook.id}/deliveries`)).body.deliveries.filter((d: any) => d.battery_id === 'wh-down');
      assert.deepEqual(
        pending.map((d: any) => [d.type, d.state]),
        [
          ['escalated', 'pending'],
          ['raised', 'pending'],
        ],
      );
      assert.ok(pending[1].attempts.every((a: any) => a.status === 503 && a.error === 'HTTP 503'));
      target.answer = 200;
      await target.until((r) => of(r, 'wh-down').some((x) => x.json.type === 'alarm.escalated'), 'the escalation once the receiver is back', 30_000);
      const types = of(target, 'wh-down').map((r) => r.json.type);
      assert.equal(types.at(-1), 'alarm.escalated');
      assert.ok(types.slice(0, -1).every((type) => type === 'alarm.raised'));
      const delivered = await deliveriesOf(app, webhook.id, 'wh-down', 2);
      const raise = delivered[1];
      assert.equal(raise.attempt_count, types.length - 1);
      assert.deepEqual(
        raise.attempts.map((a: any) => a.status),
        [...Array(types.length - 2).fill(503), 200],
      );
      // Backoff: each retry waits longer than the one before (doubling, with jitter of half of it at most).
      assert.ok(raise.attempts.at(-1).at > raise.attempts[0].at);
    });

    it('never follows a redirect: the attempt fails, saying so, and the place it points to gets nothing', async () => {
      const target = await receiver();
      const webhook = await addWebhook(app, { url: target.url });
      target.answer = 307;
      await voltageRule(app, 'wh-redirect');
      await post(app, 'wh-redirect', [[0, 425]]);
      await target.until((r) => of(r, 'wh-redirect').length > 0, 'the first attempt');
      // The receiver has the request a moment before its attempt is stored.
      let raise: any;
      for (const deadline = Date.now() + 10_000; raise === undefined; await sleep(50)) {
        assert.ok(Date.now() < deadline, 'no attempt stored');
        raise = (await call(app, `/api/webhooks/${webhook.id}/deliveries`)).body.deliveries.find((d: any) => d.battery_id === 'wh-redirect' && d.attempts.length > 0);
      }
      assert.deepEqual([raise.state, raise.attempts[0].status, raise.attempts[0].error], ['pending', 307, 'HTTP 307: a redirect, not followed']);
      assert.deepEqual(target.received.map((r) => r.url), target.received.map(() => '/hook'));
      target.answer = 200;
      await deliveriesOf(app, webhook.id, 'wh-redirect', 1);
    });

    it('backs off a receiver that is down as a whole: one request per backoff, however many alarms wait; once it is back, every one goes', async () => {
      const target = await receiver();
      const webhook = await addWebhook(app, { url: target.url });
      target.answer = 503;
      const packs = Array.from({ length: 30 }, (_, i) => `wh-dead-${i}`);
      for (const pack of packs) await voltageRule(app, pack);
      for (const pack of packs) await post(app, pack, [[0, 425]]);
      await target.until((r) => r.length > 0, 'a first attempt');
      await sleep(3_000);
      // One alarm at a time would be 30 first attempts and 30 more each second; the receiver as a
      // whole gets at most one burst, then one probe per backoff (0.5-1 s, 1-2 s, 2-4 s: 3 in 3 s).
      const whileDown = target.received.length;
      assert.ok(whileDown <= PER_RECEIVER_CONCURRENCY + 3, `${whileDown} requests in 3 s to a receiver that is down, with 30 alarms waiting`);
      target.answer = 200;
      for (const pack of packs) {
        const [raise] = await deliveriesOf(app, webhook.id, pack, 1);
        assert.equal(raise.type, 'raised');
      }
      // Every alarm's notification is taken once the receiver is back, without waiting out its own backoff.
      assert.ok(target.received.length < whileDown + packs.length + PER_RECEIVER_CONCURRENCY, `${target.received.length} requests in all`);
    });

    it(`sends at most ${PER_RECEIVER_CONCURRENCY} requests at once to one receiver: a slow one keeps no other from its share`, async () => {
      const slow = await receiver();
      const webhook = await addWebhook(app, { url: slow.url });
      slow.answer = 'hold';
      const packs = Array.from({ length: 12 }, (_, i) => `wh-slow-${i}`);
      for (const pack of packs) await voltageRule(app, pack);
      for (const pack of packs) await post(app, pack, [[0, 425]]);
      const deadline = Date.now() + 10_000;
      while (slow.held.length < PER_RECEIVER_CONCURRENCY && Date.now() < deadline) await sleep(25);
      await sleep(500);
      assert.equal(slow.held.length, PER_RECEIVER_CONCURRENCY);
      // The other webhooks still get theirs: the one set by WEBHOOK_URLS has every pack's raise.
      await configReceiver.until((r) => packs.every((pack) => of(r, pack).length > 0), 'the other receiver');
      slow.answer = 200;
      for (const response of slow.held.splice(0)) response.writeHead(200).end('ok');
      for (const pack of packs) await deliveriesOf(app, webhook.id, pack, 1);
    });

    it('/api/webhooks: lists without secrets or tokens, refuses bad bodies naming the field, deletes; WEBHOOK_URLS entries stay', async () => {
      const target = await receiver();
      const created = await addWebhook(app, { url: `${target.url}?token=top-secret-token`, secret: 'shown-once-0123456789', enabled: false });
      assert.equal(created.enabled, false);
      assert.equal(created.source, 'api');
      const list = await call(app, '/api/webhooks');
      assert.equal(list.status, 200);
      const text = JSON.stringify(list.body);
      assert.ok(!text.includes('shown-once') && !text.includes('top-secret-token') && !text.includes(CONFIG_SECRET) && !text.includes('config-token-xyz'), text);
      const mine = list.body.webhooks.find((w: any) => w.id === created.id);
      assert.deepEqual(mine, { id: created.id, url: `${new URL(target.url).origin}/…`, enabled: false, source: 'api', created_at: created.created_at });
      assert.ok(list.body.webhooks.some((w: any) => w.id === configWebhookId(configReceiver.url) && w.source === 'config'));

      const bad = await call(app, '/api/webhooks', { body: { url: 'ftp://x', secret: 'short', extra: 1 } });
      assert.equal(bad.status, 422);
      const fields = bad.body.detail.map((d: any) => d.loc.join('.'));
      assert.ok(fields.includes('body.url') && fields.includes('body.secret'), JSON.stringify(bad.body));

      assert.equal((await call(app, `/api/webhooks/${created.id}`, { method: 'DELETE' })).status, 204);
      assert.equal((await call(app, `/api/webhooks/${created.id}`, { method: 'DELETE' })).status, 404);
      assert.equal((await call(app, `/api/webhooks/${created.id}/deliveries`)).status, 404);
      const configured = await call(app, `/api/webhooks/${configWebhookId(configReceiver.url)}`, { method: 'DELETE' });
      assert.equal(configured.status, 409);
      assert.match(configured.body.detail, /WEBHOOK_URLS/);
    });

    it(`/api/webhooks: at most ${MAX_WEBHOOKS}, WEBHOOK_URLS included; one more answers 409 and stores nothing`, async () => {
      const before = (await call(app, '/api/webhooks')).body.webhooks.length;
      const created: string[] = [];
      for (let i = before; i < MAX_WEBHOOKS; i++) created.push((await addWebhook(app, { url: `http://127.0.0.1:9/hook-${i}`, enabled: false })).id);
      const refused = await call(app, '/api/webhooks', { body: { url: 'http://127.0.0.1:9/one-too-many', enabled: false } });
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.match(refused.body.detail, new RegExp(`${MAX_WEBHOOKS} webhooks`));
      assert.equal((await call(app, '/api/webhooks')).body.webhooks.length, MAX_WEBHOOKS);
      for (const id of created) assert.equal((await call(app, `/api/webhooks/${id}`, { method: 'DELETE' })).status, 204);
    });
  });
}
