/**
 * An instance killed under load: three real services on one MongoDB-wire server behind HAProxy;
 * HTTP clients that retry with an Idempotency-Key and two `collect` relays (their spools forwarding
 * through the balancer) send readings while one instance is killed with SIGKILL. Every reading is
 * stored once, and live-stream subscribers on the two surviving instances see every stored record
 * once.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { startStandaloneCollector, type StandaloneCollector } from '../../src/relay/collect.js';
import { recordingLogger, sendChunks } from '../collector/helpers.js';
import { mongoForTests } from '../support/mongo-server.js';
import { relayEnv } from '../support/relay-env.js';
import { tempDir } from '../support/temp-dir.js';
import { haproxyInstalled, kill, startBalancer, startInstances, StreamReader, until, type Instance } from './cluster.js';

const { server, freshDatabase, admin } = await mongoForTests('cluster_failover');

const BASE = Math.floor(Date.now() / 1000) - 3600;
const HTTP_CLIENTS = 3;
const POSTS_PER_CLIENT = 40;
const PER_POST = 10;
const RELAY_CHUNKS = 20;
const PER_CHUNK = 50;

async function startRelay(apiUrl: string): Promise<StandaloneCollector> {
  const config = loadConfig(relayEnv(tempDir('cluster-relay-')));
  return startStandaloneCollector(config, { apiUrl, logger: recordingLogger() });
}

/** POSTs until answered 200 (a killed instance answers 502 through HAProxy, or the connection drops): the key makes a resend harmless. */
async function postUntilStored(url: string, body: unknown[], key: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      const response = await fetch(`${url}/api/battery-data`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify(body),
      });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // The connection went down with the instance: send again.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`gave up on ${key}`);
}

const reading = (pack: string, n: number) => ({ battery_id: pack, timestamp: BASE + n, pack_voltage: 40 + n / 1024, pack_current: 1, cell_temp: 25 });

describe('an instance killed under load', { skip: haproxyInstalled() ? false : 'haproxy is not installed' }, () => {
  let instances: Instance[] = [];
  const relays: StandaloneCollector[] = [];
  after(async () => {
    for (const relay of relays) await relay.close();
    for (const instance of instances) instance.child.kill('SIGKILL');
  });

  it('clients and relays lose nothing and store nothing twice; subscribers on the survivors see every record once', async () => {
    const database = freshDatabase();
    instances = await startInstances(3, { MONGODB_URI: server.uri, DATABASE_NAME: database, LEASE_SECONDS: '3', CLUSTER_POLL_MS: '100' });
    const balancer = await startBalancer(instances);
    after(() => balancer.stop());
    const [victim, ...survivors] = instances as [Instance, ...Instance[]];
    const readers = await Promise.all(survivors.map((instance) => StreamReader.open(instance.url)));
    after(() => Promise.all(readers.map((reader) => reader.close())));
    for (let r = 0; r < 2; r++) relays.push(await startRelay(balancer.url));

    let sent = 0;
    const clients = Array.from({ length: HTTP_CLIENTS }, async (_, c) => {
      const pack = `http-${c}`;
      for (let post = 0; post < POSTS_PER_CLIENT; post++) {
        const body = Array.from({ length: PER_POST }, (_, i) => reading(pack, post * PER_POST + i));
        await postUntilStored(balancer.url, body, `${pack}-${post}`);
        sent++;
      }
    });
    const relayed = relays.map(async (relay, r) => {
      const pack = `relay-${r}`;
      for (let chunk = 0; chunk < RELAY_CHUNKS; chunk++) {
        const lines = Array.from({ length: PER_CHUNK }, (_, i) => JSON.stringify(reading(pack, chunk * PER_CHUNK + i)));
        await sendChunks(relay.collector.jsonPort, [Buffer.from(lines.join('\n') + '\n')]);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    });
    // Mid-stream: a third of the POSTs answered.
    await until(() => sent >= (HTTP_CLIENTS * POSTS_PER_CLIENT) / 3, 'a third of the POSTs answered');
    await kill(victim);
    await Promise.all([...clients, ...relayed]);
    for (const relay of relays) {
      await until(() => relay.spool.depth().records === 0, 'the relay delivered its spool', 60_000);
    }

    const expected = new Map<string, number>();
    for (let c = 0; c < HTTP_CLIENTS; c++) expected.set(`http-${c}`, POSTS_PER_CLIENT * PER_POST);
    for (let r = 0; r < relays.length; r++) expected.set(`relay-${r}`, RELAY_CHUNKS * PER_CHUNK);
    const collection = admin.db(database).collection('battery_data');
    const stored = await collection.find({}, { projection: { _id: 1, battery_id: 1, timestamp: 1 } }).toArray();
    const ids = new Set(stored.map((doc) => doc._id.toHexString()));
    for (const [pack, count] of expected) {
      const timestamps = stored.filter((doc) => doc.battery_id === pack).map((doc) => doc.timestamp as number);
      assert.equal(timestamps.length, count, `${pack}: every reading stored`);
      assert.equal(new Set(timestamps).size, count, `${pack}: none twice`);
    }

    for (const [i, reader] of readers.entries()) {
      await until(() => reader.records().length >= ids.size, `${survivors[i]!.id} sees every record`, 60_000);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const seen = reader.records().map((record) => record._id as string);
      assert.equal(seen.length, ids.size, `${survivors[i]!.id}: each record once`);
      assert.deepEqual(new Set(seen), ids);
    }
  });
});
