/**
 * Changes made through one instance act on the instance that owns the pack: three real services on
 * one MongoDB-wire server behind HAProxy. An alarm rule created through an instance that does not
 * own a pack raises an alarm on the owner (and its deletion clears it there); a pack's specs put
 * through a non-owner are the ones the owner's analytics takes the next readings with; an alarm
 * acknowledged through a non-owner is acknowledged by the owner, once, and every instance's live
 * stream shows it; with the owner unable to answer (paused), 503 with Retry-After, and the alarm is
 * not acknowledged later either.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startReceiver } from '../alarms/webhook-receiver.js';
import { call } from '../support/helper.js';
import { mongoForTests } from '../support/mongo-server.js';
import { haproxyInstalled, startBalancer, startInstances, StreamReader, until, type Balancer, type Instance } from './cluster.js';

const { server, freshDatabase, admin } = await mongoForTests('cluster_settings');

const BASE = Math.floor(Date.now() / 1000) - 600;

describe('settings and commands across three instances behind HAProxy', { skip: haproxyInstalled() ? false : 'haproxy is not installed' }, () => {
  let instances: Instance[] = [];
  let balancer: Balancer;
  let database: string;

  before(async () => {
    database = freshDatabase();
    // Long leases: an owner paused for a few seconds (the last test) keeps its packs.
    instances = await startInstances(3, { MONGODB_URI: server.uri, DATABASE_NAME: database, CLUSTER_POLL_MS: '100', NO_DATA_SECONDS: '3600', LEASE_SECONDS: '20' });
    balancer = await startBalancer(instances);
  });
  after(async () => {
    await balancer?.stop();
    for (const instance of instances) instance.child.kill('SIGKILL');
  });

  /** Posts a reading of the pack through the balancer. */
  async function post(pack: string, n: number, reading: { pack_voltage: number; pack_current: number; cell_temp: number }): Promise<void> {
    const answer = await call(balancer.url, '/api/battery-data', { body: [{ battery_id: pack, timestamp: BASE + n, ...reading }] });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }

  /** The instance that holds the pack's lease, once one does, and one that does not. */
  async function ownerOf(pack: string): Promise<{ owner: Instance; other: Instance }> {
    const leases = admin.db(database).collection<{ _id: string; owner: string }>('cluster_leases');
    let owner: Instance | undefined;
    await until(async () => {
      const lease = await leases.findOne({ _id: `pack:${pack}` });
      owner = instances.find((instance) => instance.id === lease?.owner);
      return owner !== undefined;
    }, `an instance owns ${pack}`);
    return { owner: owner!, other: instances.find((instance) => instance !== owner)! };
  }

  /** Posts readings of the pack, a new one every 100 ms, until `done` holds (bounded). */
  async function postUntil(pack: string, from: number, reading: Parameters<typeof post>[2], done: () => Promise<boolean>, what: string): Promise<number> {
    let n = from;
    await until(async () => {
      await post(pack, n++, reading);
      await new Promise((resolve) => setTimeout(resolve, 100));
      return done();
    }, what, 20_000);
    return n;
  }

  const alarmsOf = async (url: string, query: string): Promise<any[]> => {
    const answer = await call(url, `/api/alarms?${query}`);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.alarms;
  };

  /** Readings over the voltage rule's warning level (440 V), posted until the alarm is open as `url` answers; the pack's owner and another instance. */
  async function voltageAlarm(pack: string, url: (other: Instance) => string): Promise<{ owner: Instance; other: Instance; alarm: any }> {
    const high = { pack_voltage: 445, pack_current: 1, cell_temp: 25 };
    await post(pack, 0, high);
    const { owner, other } = await ownerOf(pack);
    let alarm: any;
    await postUntil(
      pack,
      1,
      high,
      async () => {
        [alarm] = await alarmsOf(url(other), `battery_id=${pack}&rule_id=voltage&state=open`);
        return alarm !== undefined;
      },
      'the alarm raised',
    );
    return { owner, other, alarm };
  }

  it('a rule created through a non-owner raises an alarm on the owner, and its deletion there clears it', async () => {
    const pack = 'sync-rule';
    const warm = { pack_voltage: 400, pack_current: 1, cell_temp: 35 };
    await post(pack, 0, warm);
    const { owner, other } = await ownerOf(pack);
    // Past no default rule (temperature warns at 45): only the new rule raises.
    await postUntil(pack, 1, warm, async () => (await call(owner.url, `/api/batteries/${pack}/health`)).status === 200, 'the owner takes the readings');
    const created = await call(other.url, '/api/alarm-rules', {
      body: { name: 'Warm pack', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 30 }, battery_id: pack },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const ruleId = created.body.id as string;

    let n = await postUntil(pack, 100, warm, async () => (await alarmsOf(owner.url, `rule_id=${ruleId}&state=open`)).length > 0, 'the owner raises an alarm by the new rule');
    const [alarm] = await alarmsOf(balancer.url, `rule_id=${ruleId}&state=all`);
    assert.equal(alarm.battery_id, pack);
    assert.equal(alarm.state, 'active');

    assert.equal((await call(other.url, `/api/alarm-rules/${ruleId}`, { method: 'DELETE' })).status, 204);
    n = await postUntil(pack, n, warm, async () => (await alarmsOf(owner.url, `rule_id=${ruleId}&state=cleared`)).length > 0, 'the owner clears it');
    const [cleared] = await alarmsOf(balancer.url, `rule_id=${ruleId}&state=all`);
    assert.equal(cleared.clear_reason, 'rule_deleted');
    // Raised once, cleared once: no instance but the owner judged the pack by the rule.
    const events = await admin.db(database).collection('alarm_events').find({ rule_id: ruleId }).toArray();
    assert.deepEqual(events.map((event) => event.type).sort(), ['cleared', 'raised']);
  });

  it('specs put through a non-owner are the ones the owner takes the next readings with', async () => {
    const pack = 'sync-specs';
    // 400 V at rest: not full by the default specs (4.1 V per cell, 442.8 V).
    const resting = { pack_voltage: 400, pack_current: 0, cell_temp: 25 };
    await post(pack, 0, resting);
    const { owner, other } = await ownerOf(pack);
    const health = async () => (await call(owner.url, `/api/batteries/${pack}/health`)).body;
    await postUntil(pack, 1, resting, async () => (await health()).readings >= 3, 'the owner takes the readings');
    assert.equal((await health()).anchors, 0);

    const put = await call(other.url, `/api/batteries/${pack}/specs`, { method: 'PUT', body: { full_charge_voltage: 390, nominal_capacity_ah: 50 } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    await postUntil(pack, 100, resting, async () => (await health()).anchors > 0, 'the owner sees the pack full by the new specs');
    const answer = await health();
    assert.equal(answer.specs.full_charge_voltage, 390);
    assert.equal(answer.specs.nominal_capacity_ah, 50);
  });

  it("a new pack's first readings, stamped hours ago (a device's backlog), are judged and integrated by its owner", async () => {
    const pack = 'sync-backlog';
    // One batch, three hours old, over the voltage rule's warning level (440 V), and nothing after it:
    // the owner must take these from the store when it claims the pack.
    const old = Math.floor(Date.now() / 1000) - 3 * 3600;
    const body = [0, 1, 2].map((i) => ({ battery_id: pack, timestamp: old + i, pack_voltage: 445, pack_current: -10, cell_temp: 25 }));
    assert.equal((await call(balancer.url, '/api/battery-data', { body })).status, 200);
    const { owner } = await ownerOf(pack);
    await until(async () => (await alarmsOf(owner.url, `battery_id=${pack}&rule_id=voltage&state=open`)).length > 0, `${owner.id} raises the alarm of the backlog`);
    await until(async () => (await call(owner.url, `/api/batteries/${pack}/health`)).body.readings === 3, `${owner.id} integrates the backlog's three readings`);
  });

  it('a webhook added through a non-owner gets the alarm changes the owner makes; deleted there, it gets no more', async () => {
    const pack = 'sync-webhook';
    const receiver = await startReceiver();
    after(() => receiver.close());
    // Over the voltage rule's warning level (440 V) from the second reading on.
    const calm = { pack_voltage: 400, pack_current: 1, cell_temp: 25 };
    const high = { pack_voltage: 445, pack_current: 1, cell_temp: 25 };
    await post(pack, 0, calm);
    const { owner, other } = await ownerOf(pack);
    const added = await call(other.url, '/api/webhooks', { body: { url: receiver.url } });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const listed = async (instance: Instance) => ((await call(instance.url, '/api/webhooks')).body.webhooks as { id: string }[]).some((w) => w.id === added.body.id);
    await until(() => listed(owner), `${owner.id} has the webhook added through ${other.id}`);

    await postUntil(pack, 1, high, async () => receiver.received.some((r) => r.json.alarm?.battery_id === pack && r.json.type === 'alarm.raised'), 'the receiver gets the raise');
    assert.equal((await call(other.url, `/api/webhooks/${added.body.id}`, { method: 'DELETE' })).status, 204);
    await until(async () => !(await listed(owner)), `${owner.id} drops the webhook deleted through ${other.id}`);
  });

  it('an alarm acknowledged through a non-owner is acknowledged by the owner, once, on every stream', async () => {
    const pack = 'sync-ack';
    const readers = await Promise.all(instances.map((instance) => StreamReader.open(instance.url)));
    after(() => Promise.all(readers.map((reader) => reader.close())));
    const { owner, other, alarm } = await voltageAlarm(pack, () => balancer.url);

    const answer = await call(other.url, `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`, { body: { by: 'operator', note: 'seen from another instance' } });
    assert.equal(answer.status, 200, `${other.id} (owner ${owner.id}): ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body.state, 'acknowledged');
    assert.equal(answer.body.acknowledged_by, 'operator');
    assert.equal(answer.body.events.filter((event: any) => event.type === 'acknowledged').length, 1);
    // Once acknowledged, through any instance, it is acknowledged already.
    const again = await call(balancer.url, `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`, { body: { by: 'someone else' } });
    assert.equal(again.status, 409, JSON.stringify(again.body));

    const acknowledged = (reader: StreamReader) =>
      reader.events.filter((event) => event.event === 'alarm' && event.data.alarm.id === alarm.id && event.data.event.type === 'acknowledged');
    for (const [i, reader] of readers.entries()) await until(() => acknowledged(reader).length > 0, `${instances[i]!.id} sees the acknowledgement`);
    // A moment more: anything delivered twice would come now.
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const [i, reader] of readers.entries()) {
      assert.equal(acknowledged(reader).length, 1, `${instances[i]!.id}: the acknowledgement once`);
      assert.equal(acknowledged(reader)[0]!.data.alarm.acknowledged_note, 'seen from another instance');
    }
    const events = await admin.db(database).collection('alarm_events').find({ alarm_id: alarm.id, type: 'acknowledged' }).toArray();
    assert.equal(events.length, 1);
  });

  it('an acknowledgement the owner cannot answer in time is 503 with Retry-After, and not made later', async () => {
    const pack = 'sync-ack-paused';
    const { owner, other, alarm } = await voltageAlarm(pack, (other) => other.url);

    owner.child.kill('SIGSTOP');
    let answer;
    try {
      answer = await call(other.url, `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`, { body: { by: 'operator' } });
    } finally {
      owner.child.kill('SIGCONT');
    }
    assert.equal(answer.status, 503, JSON.stringify(answer.body));
    assert.equal(answer.headers.get('retry-after'), '5');
    assert.match(answer.body.detail, /answered in time/);

    // The owner, running again, finds no command to run: the alarm stays active, with no acknowledgement.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const later = await call(owner.url, `/api/alarms/${encodeURIComponent(alarm.id)}`);
    assert.equal(later.status, 200);
    assert.equal(later.body.state, 'active');
    assert.deepEqual(later.body.events.map((event: any) => event.type), ['raised']);
    // And through the non-owner once the owner answers again.
    const retried = await call(other.url, `/api/alarms/${encodeURIComponent(alarm.id)}/acknowledge`, { body: { by: 'operator' } });
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body.state, 'acknowledged');
  });
});
