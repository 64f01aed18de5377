/**
 * Per-pack work moves when its instance dies: three real services on one MongoDB-wire server behind
 * HAProxy. A pack's readings, posted through the balancer, raise a voltage alarm on the instance that
 * owns the pack (its lease); that instance is killed (SIGKILL); the lease moves to another within
 * 30 s, which goes on from the stored state: the alarm clears once, a second one is raised and
 * cleared once, and the pack's charge throughput (equivalent cycles) is what one instance on SQLite
 * computes from the same readings: no alarm raised twice or missed, no reading counted twice.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { call } from '../support/helper.js';
import { mongoForTests } from '../support/mongo-server.js';
import { tempDir } from '../support/temp-dir.js';
import { haproxyInstalled, kill, startBalancer, startInstance, startInstances, until, type Instance } from './cluster.js';

const { server, freshDatabase, admin } = await mongoForTests('cluster_takeover');

const PACK = 'take-1';
const STEP = 10;
const BASE = Math.floor(Date.now() / 1000) - 4 * 3600;
/** Over the voltage rule's warning level (440 V) for readings [from, to). */
const HIGH: [number, number][] = [
  [300, 310],
  [600, 610],
];
const TOTAL = 900;
const PER_POST = 10;

/** Reading n: 400 V (445 V while high), ±150 A alternating every 90 readings (charge, then discharge). */
function reading(n: number) {
  const high = HIGH.some(([from, to]) => n >= from && n < to);
  return {
    battery_id: PACK,
    timestamp: BASE + n * STEP,
    pack_voltage: high ? 445 : 400,
    pack_current: Math.floor(n / 90) % 2 === 0 ? 150 : -150,
    cell_temp: 25,
  };
}

async function postUntilStored(url: string, from: number): Promise<void> {
  const body = Array.from({ length: PER_POST }, (_, i) => reading(from + i));
  for (let attempt = 0; attempt < 300; attempt++) {
    try {
      const response = await fetch(`${url}/api/battery-data`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': `${PACK}-${from}` },
        body: JSON.stringify(body),
      });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // The instance went down mid-request: send again, through the balancer.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`gave up on readings from ${from}`);
}

async function post(url: string, from: number, to: number): Promise<void> {
  for (let n = from; n < to; n += PER_POST) await postUntilStored(url, n);
}

async function voltageAlarms(url: string): Promise<any[]> {
  const answer = await call(url, `/api/alarms?battery_id=${PACK}&rule_id=voltage&state=all`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.alarms;
}

async function cycles(url: string): Promise<number | null> {
  const answer = await call(url, `/api/batteries/${PACK}/health`);
  return answer.status === 200 ? (answer.body.equivalent_cycles?.value ?? null) : null;
}

/** What the alarms say about the pack, without ids and server times: comparable between runs. */
const summary = (alarms: any[]) => alarms.map((alarm) => [alarm.state, alarm.severity, alarm.raised_at, alarm.cleared_at, alarm.event_count]).sort();

describe('a pack taken over when its instance dies', { skip: haproxyInstalled() ? false : 'haproxy is not installed' }, () => {
  const started: Instance[] = [];
  after(() => {
    for (const instance of started) instance.child.kill('SIGKILL');
  });

  it('its alarms and analytics move within 30 s and go on from the stored state', async () => {
    const env = { NO_DATA_SECONDS: '3600' };
    // The reference: one instance on SQLite, the same readings.
    const single = await startInstance('single', { ...env, DATA_DIR: tempDir('takeover-single-') });
    started.push(single);
    await post(single.url, 0, TOTAL);
    await until(async () => (await voltageAlarms(single.url)).filter((alarm) => alarm.state === 'cleared').length === 2, 'the reference alarms');
    const expectedAlarms = summary(await voltageAlarms(single.url));
    await until(async () => (await cycles(single.url)) !== null, 'the reference estimates');
    const expectedCycles = (await cycles(single.url))!;
    assert.ok(expectedCycles > 1, `${expectedCycles} equivalent cycles`);

    const database = freshDatabase();
    const instances = await startInstances(3, { ...env, MONGODB_URI: server.uri, DATABASE_NAME: database, LEASE_SECONDS: '3', CLUSTER_POLL_MS: '100' });
    started.push(...instances);
    const balancer = await startBalancer(instances);
    after(() => balancer.stop());
    const leases = admin.db(database).collection<{ _id: string; owner: string }>('cluster_leases');

    // Up to the first alarm, open.
    await post(balancer.url, 0, 310);
    await until(async () => (await voltageAlarms(balancer.url)).some((alarm) => alarm.state === 'active'), 'the first alarm raised');
    const owner = (await leases.findOne({ _id: `pack:${PACK}` }))!.owner;
    const victim = instances.find((instance) => instance.id === owner)!;
    assert.ok(victim !== undefined, owner);
    const [active] = (await voltageAlarms(balancer.url)).filter((alarm) => alarm.state === 'active');
    assert.equal(active.raised_at, BASE + HIGH[0]![0] * STEP);

    await kill(victim);
    const survivors = instances.filter((instance) => instance !== victim);
    // The rest of the readings while the pack has no live owner, then once it has one again.
    await post(balancer.url, 310, 500);
    await until(
      async () => {
        const lease = await leases.findOne({ _id: `pack:${PACK}` });
        return lease !== null && lease.owner !== owner;
      },
      'the pack moves to another instance',
      30_000,
    );
    const heir = (await leases.findOne({ _id: `pack:${PACK}` }))!.owner;
    assert.ok(survivors.some((instance) => instance.id === heir), heir);
    await post(balancer.url, 500, TOTAL);

    for (const instance of survivors) {
      await until(async () => (await voltageAlarms(instance.url)).filter((alarm) => alarm.state === 'cleared').length >= 2, `${instance.id}: both alarms cleared`);
      assert.deepEqual(summary(await voltageAlarms(instance.url)), expectedAlarms, `${instance.id}: the alarms one instance raises`);
      await until(async () => (await cycles(instance.url)) === expectedCycles, `${instance.id}: ${expectedCycles} equivalent cycles`, 30_000);
    }
    // Each event once: stored by the owner before and after the takeover.
    const events = await admin.db(database).collection('alarm_events').find({ battery_id: PACK, rule_id: 'voltage' }).toArray();
    assert.deepEqual(events.map((event) => event.type).sort(), ['cleared', 'cleared', 'raised', 'raised']);
  });
});
