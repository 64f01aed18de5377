/**
 * Several instances are one live stream: three real services on one MongoDB-wire server behind
 * HAProxy; a subscriber on each instance sees every record posted through the balancer (so through
 * all three) once, each pack's in order, and every alarm change once, whichever instance evaluated
 * it; /health says how the feed works.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { call } from '../support/helper.js';
import { mongoForTests } from '../support/mongo-server.js';
import { haproxyInstalled, startBalancer, startInstances, StreamReader, until, type Instance } from './cluster.js';

const PACKS = ['live-a', 'live-b', 'live-c'];
const POSTS_PER_PACK = 12;
const PER_POST = 5;
const BASE = Math.floor(Date.now() / 1000) - 600;

const { server, freshDatabase } = await mongoForTests('cluster_live');

describe('live stream across three instances behind HAProxy', { skip: haproxyInstalled() ? false : 'haproxy is not installed' }, () => {
  let instances: Instance[] = [];
  after(() => {
    for (const instance of instances) instance.child.kill('SIGKILL');
  });

  it('a subscriber on any instance sees every record posted through the balancer, once, each pack in order, and every alarm change once', async () => {
    instances = await startInstances(3, { MONGODB_URI: server.uri, DATABASE_NAME: freshDatabase(), CLUSTER_POLL_MS: '100' });
    const balancer = await startBalancer(instances);
    after(() => balancer.stop());

    for (const instance of instances) {
      const health = (await call(instance.url, '/health')).body;
      assert.equal(health.instance, instance.id);
      assert.equal(health.feed, 'poll');
      assert.equal(typeof health.change_streams, 'boolean');
    }

    const readers = await Promise.all(instances.map((instance) => StreamReader.open(instance.url)));
    after(() => Promise.all(readers.map((reader) => reader.close())));
    // The packs' POSTs interleave; each pack's go one after another, so its order is its timestamps'.
    const ids = new Set<string>();
    await Promise.all(
      PACKS.map(async (pack) => {
        for (let post = 0; post < POSTS_PER_PACK; post++) {
          const body = Array.from({ length: PER_POST }, (_, i) => ({
            battery_id: pack,
            timestamp: BASE + post * PER_POST + i,
            pack_voltage: 48 + i / 10,
            pack_current: 1,
            cell_temp: 25,
          }));
          const answer = await call(balancer.url, '/api/battery-data', { body });
          assert.equal(answer.status, 200, JSON.stringify(answer.body));
          for (const id of answer.body.ids as string[]) ids.add(id);
        }
      }),
    );
    const total = PACKS.length * POSTS_PER_PACK * PER_POST;
    assert.equal(ids.size, total);

    for (const [i, reader] of readers.entries()) {
      await until(() => reader.records().length >= total, `${instances[i]!.id} sees ${total} records`);
      // A moment more: anything delivered twice would come now.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const records = reader.records();
      assert.equal(records.length, total, `${instances[i]!.id}: every record once`);
      assert.deepEqual(new Set(records.map((record) => record._id)), ids);
      for (const pack of PACKS) {
        const timestamps = records.filter((record) => record.battery_id === pack).map((record) => record.timestamp);
        assert.deepEqual(timestamps, [...timestamps].sort((a, b) => a - b), `${instances[i]!.id}: ${pack} in order`);
      }
    }

    // An alarm, raised on whichever instance evaluates its pack, reaches every instance's stream once.
    const high = { battery_id: 'live-alarm', timestamp: BASE + 1000, pack_voltage: 445, pack_current: 1, cell_temp: 25 };
    assert.equal((await call(balancer.url, '/api/battery-data', { body: [{ ...high, timestamp: BASE + 999, pack_voltage: 400 }, high] })).status, 200);
    const raised = (reader: StreamReader) =>
      reader.events.filter((event) => event.event === 'alarm' && event.data.alarm.battery_id === 'live-alarm' && event.data.event.type === 'raised');
    for (const [i, reader] of readers.entries()) await until(() => raised(reader).length > 0, `${instances[i]!.id} sees the alarm raised`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const [i, reader] of readers.entries()) {
      assert.equal(raised(reader).length, 1, `${instances[i]!.id}: the alarm once`);
      assert.equal(raised(reader)[0]!.data.alarm.rule_id, 'voltage');
    }
  });
});
