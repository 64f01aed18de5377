/**
 * Periodic work once per period across instances: three real services on one MongoDB-wire server
 * start together, and the hourly retention of records and of cleared alarms runs on one of them, not
 * on each. Its holder killed (kill -9), the lease moves to another instance within 30 s, which does
 * not run it again before the hour is up.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { call } from '../support/helper.js';
import { mongoForTests } from '../support/mongo-server.js';
import { kill, startInstances, until, type Instance } from './cluster.js';

const { server, freshDatabase, admin } = await mongoForTests('cluster_periodic');

function runs(instances: readonly Instance[], message: string): string[] {
  return instances.flatMap((instance) =>
    instance.lines.filter((line) => line.includes(`"msg":"${message}"`)).map(() => instance.id),
  );
}

async function metric(instance: Instance, name: string): Promise<number> {
  const text = (await call(instance.url, '/metrics')).body as string;
  const line = text.split('\n').find((row) => row.startsWith(name));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('periodic work across three instances', () => {
  let instances: Instance[] = [];
  after(() => {
    for (const instance of instances) instance.child.kill('SIGKILL');
  });

  it('runs once per period, and moves within 30 s when its holder dies', async () => {
    const database = freshDatabase();
    instances = await startInstances(3, { MONGODB_URI: server.uri, DATABASE_NAME: database, LEASE_SECONDS: '3', RETENTION_DAYS: '30' });
    const leases = admin.db(database).collection<{ _id: string; owner: string }>('cluster_leases');
    await until(async () => (await leases.findOne({ _id: 'periodic:retention' })) !== null, 'the retention lease is taken');
    // Each instance has checked the lease a few times (every LEASE_SECONDS / 3).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const retention = runs(instances, 'retention: removed old records');
    assert.equal(retention.length, 1, `record retention ran on ${retention.join(', ')}`);
    const holder = (await leases.findOne({ _id: 'periodic:retention' }))!.owner;
    assert.deepEqual(retention, [holder]);
    const holding = instances.find((instance) => instance.id === holder)!;
    assert.equal(await metric(holding, 'cluster_leases_held{purpose="periodic"}'), 2, 'records and cleared alarms');

    await kill(holding);
    const survivors = instances.filter((instance) => instance !== holding);
    await until(async () => {
      const lease = await leases.findOne({ _id: 'periodic:retention' });
      return lease !== null && lease.owner !== holder;
    }, 'the retention lease moves', 30_000);
    const owner = (await leases.findOne({ _id: 'periodic:retention' }))!.owner;
    const newHolder = survivors.find((instance) => instance.id === owner);
    assert.ok(newHolder !== undefined, owner);
    assert.ok((await metric(newHolder, 'cluster_leases_taken_over_total{purpose="periodic"}')) >= 1);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(runs(survivors, 'retention: removed old records'), [], 'not again within the hour');
  });
});
