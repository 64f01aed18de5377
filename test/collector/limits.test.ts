/**
 * What bounds an unauthenticated TCP client (issue 15, items 3 and 13): the allow list, the
 * per-address connection cap, the first-byte timeout, the start-up warning for a collector other
 * hosts can reach, and the end of a JSON connection that sent a message over 64 KiB. Options come
 * from the settings through collectorOptionsFromConfig, as in the service.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import { collectorOptionsFromConfig, type CollectorOptions } from '../../src/collector/collector.js';
import { metricValue } from '../../src/collector/metrics.js';
import { canonicalAddress, isLoopback, peerAllowList } from '../../src/collector/peer-address.js';
import { loadConfig } from '../../src/config.js';
import { allRecords, closed, connect, eventually, settle, startTestCollector, within } from './helpers.js';

const frameOf = (n: number) => encodeFrame({ device_time: n, pack_voltage: 350, pack_current: -5, cell_temp: 25 });
const prediction = (n: number) => `${JSON.stringify({ timestamp: 1732700000 + n, remaining_life_hours: n, remaining_cycles: 10, degradation_rate: 0.01 })}\n`;

/** Collector options from the settings, on free loopback ports unless `env` says otherwise. */
function fromSettings(env: Record<string, string>): Partial<CollectorOptions> {
  return collectorOptionsFromConfig(loadConfig({ COLLECTOR_HOST: '127.0.0.1', COLLECTOR_BINARY_PORT: '0', COLLECTOR_JSON_PORT: '0', ...env }));
}

function connectTo(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** True while the peer has not closed it: a write still goes through and no 'close' came. */
const open = (socket: net.Socket) => !socket.destroyed && !socket.readableEnded;

test('IPv4-mapped peers match IPv4 networks of COLLECTOR_ALLOW and count as their IPv4 address', () => {
  const allowed = peerAllowList(loadConfig({ COLLECTOR_ALLOW: '10.0.0.0/8,fd00::/8' }).collectorAllow)!;
  assert.equal(allowed('10.0.0.7'), true);
  assert.equal(allowed('::ffff:10.0.0.7'), true, 'a dual-stack listener sees IPv4 peers this way');
  assert.equal(allowed('::ffff:127.0.0.1'), false);
  assert.equal(allowed('11.0.0.1'), false);
  assert.equal(allowed('fd00::1'), true);
  assert.equal(allowed('::1'), false);
  assert.equal(peerAllowList([]), undefined, 'empty: every peer');
  assert.equal(canonicalAddress('::ffff:10.0.0.7'), '10.0.0.7');
  assert.equal(canonicalAddress('::1'), '::1');
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(host), true, host);
  for (const host of ['0.0.0.0', '::', '192.168.1.10', '192.0.2.1', 'fd00::1', 'api.example.org']) assert.equal(isLoopback(host), false, host);
});

test('a cap of N connections per address: the N+1th from 127.0.0.1 is refused and counted, the others still work', async (t) => {
  const tc = await startTestCollector(t, fromSettings({ COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS: '3' }));
  const { binaryPort, jsonPort } = tc.collector;
  // All listeners together.
  const kept = [await connect(binaryPort), await connect(jsonPort), await connect(binaryPort)];
  await eventually(() => tc.collector.openConnections === 3, '3 open');
  const extra = await connect(jsonPort);
  await within(closed(extra), 'the fourth connection closed by the collector');
  assert.equal(await metricValue(tc.metrics.connectionsRefused, { listener: 'json', reason: 'per_address' }), 1);
  assert.equal(await metricValue(tc.metrics.connectionsRefused, { reason: 'max_connections' }), 0);
  const warning = tc.logs.find((e) => e.level === 'warn' && e.obj.reason === 'per_address');
  assert.match(warning?.msg ?? '', /COLLECTOR_MAX_CONNECTIONS_PER_ADDRESS/);

  kept[0]!.end(frameOf(1));
  kept[1]!.end(prediction(1));
  await Promise.all([within(closed(kept[0]!), 'first closed'), within(closed(kept[1]!), 'second closed')]);
  // Their slots are free again for that address.
  await eventually(() => tc.collector.openConnections === 1, 'slots released');
  const again = await connect(binaryPort);
  again.end(frameOf(2));
  kept[2]!.end(frameOf(3));
  await Promise.all([within(closed(again), 'closed'), within(closed(kept[2]!), 'closed')]);
  await settle(tc);
  assert.deepStrictEqual((await allRecords(tc.store, 'battery-data')).map((r) => r.device_time).sort(), [1, 2, 3]);
  assert.equal((await allRecords(tc.store, 'battery-prediction')).length, 1);
  assert.equal(await metricValue(tc.metrics.connectionsRefused), 1);
});

test('COLLECTOR_ALLOW without the peer: its connections are closed before a byte is stored; with it they work', async (t) => {
  const refused = await startTestCollector(t, fromSettings({ COLLECTOR_ALLOW: '10.0.0.0/8' }));
  for (const port of [refused.collector.binaryPort, refused.collector.jsonPort]) {
    const socket = await connect(port);
    socket.on('error', () => {});
    socket.write(port === refused.collector.binaryPort ? frameOf(1) : prediction(1));
    await within(closed(socket), 'closed by the collector');
  }
  await settle(refused);
  assert.equal((await allRecords(refused.store, 'battery-data')).length, 0);
  assert.equal((await allRecords(refused.store, 'battery-prediction')).length, 0);
  assert.equal(await metricValue(refused.metrics.connectionsRefused, { reason: 'not_allowed' }), 2);
  assert.equal(await metricValue(refused.metrics.bytesReceived), 0, 'not a byte read');
  assert.equal(refused.logs.filter((e) => e.obj.reason === 'not_allowed').length, 1, 'logged once, then at most every 10 s');
  assert.equal(refused.logs.filter((e) => /reachable from other hosts/.test(e.msg ?? '')).length, 0);

  const allowed = await startTestCollector(t, fromSettings({ COLLECTOR_ALLOW: '10.0.0.0/8,127.0.0.1' }));
  const socket = await connect(allowed.collector.binaryPort);
  socket.end(frameOf(2));
  await within(closed(socket), 'closed after sending');
  await settle(allowed);
  assert.equal((await allRecords(allowed.store, 'battery-data')).length, 1);
  assert.equal(await metricValue(allowed.metrics.connectionsRefused), 0);
});

test('COLLECTOR_ALLOW over IPv6: ::1 in the list is taken, ::1 outside it is refused', async (t) => {
  const outside = await startTestCollector(t, fromSettings({ COLLECTOR_HOST: '::1', COLLECTOR_ALLOW: '127.0.0.1,fd00::/8' }));
  const refusedSocket = await connectTo('::1', outside.collector.binaryPort);
  refusedSocket.on('error', () => {});
  refusedSocket.write(frameOf(1));
  await within(closed(refusedSocket), 'closed by the collector');
  await settle(outside);
  assert.equal((await allRecords(outside.store, 'battery-data')).length, 0);
  assert.equal(await metricValue(outside.metrics.connectionsRefused, { listener: 'binary', reason: 'not_allowed' }), 1);

  const inside = await startTestCollector(t, fromSettings({ COLLECTOR_HOST: '::1', COLLECTOR_ALLOW: '::1' }));
  const socket = await connectTo('::1', inside.collector.binaryPort);
  socket.end(frameOf(2));
  await within(closed(socket), 'closed after sending');
  await settle(inside);
  assert.equal((await allRecords(inside.store, 'battery-data')).length, 1);
});

test('a connection silent since it opened is closed after the first-byte timeout; one that sent a frame stays for the idle timeout', async (t) => {
  const tc = await startTestCollector(t, fromSettings({ COLLECTOR_FIRST_BYTE_TIMEOUT: '1', COLLECTOR_IDLE_TIMEOUT: '300' }));
  const talker = await connect(tc.collector.binaryPort);
  talker.write(frameOf(1));
  const silent = await connect(tc.collector.jsonPort);
  await within(closed(silent), 'the silent connection closed');
  // A second silent one opened after the first was closed: by the time it is closed too, the
  // talker has been quiet longer than the first-byte timeout, and must still be open.
  const later = await connect(tc.collector.binaryPort);
  await within(closed(later), 'the second silent connection closed');
  assert.equal(open(talker), true, 'the connection that sent a frame is kept');
  await eventually(async () => (await metricValue(tc.metrics.connectionsClosed, { reason: 'first_byte_timeout' })) === 2, 'both counted');
  assert.equal(await metricValue(tc.metrics.connectionsClosed, { reason: 'idle_timeout' }), 0);
  assert.equal(tc.logs.filter((e) => /COLLECTOR_FIRST_BYTE_TIMEOUT/.test(e.msg ?? '')).length, 1, 'logged once, then at most every 10 s');
  talker.end(frameOf(2));
  await within(closed(talker), 'talker closed');
  await settle(tc);
  assert.deepStrictEqual((await allRecords(tc.store, 'battery-data')).map((r) => r.device_time).sort(), [1, 2]);
  assert.equal(await metricValue(tc.metrics.connectionsClosed, { reason: 'peer' }), 1);
});

test('start-up warns when the listeners are reachable from other hosts without COLLECTOR_ALLOW', async (t) => {
  const reachable = /reachable from other hosts/;
  const local = await startTestCollector(t, fromSettings({}));
  assert.equal(local.logs.filter((e) => reachable.test(e.msg ?? '')).length, 0);
  await local.collector.close();

  // Bound to every interface for as long as it takes to read its log, then closed.
  const exposed = await startTestCollector(t, fromSettings({ COLLECTOR_HOST: '0.0.0.0' }));
  await exposed.collector.close();
  const warnings = exposed.logs.filter((e) => reachable.test(e.msg ?? ''));
  assert.equal(warnings.length, 1, 'one line for all listeners');
  assert.equal(warnings[0]!.level, 'warn');
  assert.match(warnings[0]!.msg!, /COLLECTOR_ALLOW/);
  assert.match(String(warnings[0]!.obj.listeners), new RegExp(`binary 0\\.0\\.0\\.0:${exposed.collector.binaryPort}, json 0\\.0\\.0\\.0:${exposed.collector.jsonPort}`));

  const allowList = await startTestCollector(t, fromSettings({ COLLECTOR_HOST: '0.0.0.0', COLLECTOR_ALLOW: '127.0.0.1' }));
  await allowList.collector.close();
  assert.equal(allowList.logs.filter((e) => reachable.test(e.msg ?? '')).length, 0, 'no warning once COLLECTOR_ALLOW says who may connect');
});

test('a JSON message over 64 KiB closes its connection; what came before it is stored, other connections go on', async (t) => {
  const tc = await startTestCollector(t);
  const other = await connect(tc.collector.jsonPort);
  const socket = await connect(tc.collector.jsonPort);
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => socket.write(prediction(1) + prediction(2), (error) => (error ? reject(error) : resolve())));
  // An endless string: 70 KiB without a newline or an end, and more after it while the socket takes it.
  const chunk = Buffer.alloc(16 * 1024, 'x');
  let sent = 0;
  const opening = Buffer.from('{"remaining_life_hours": 1, "source": "');
  await new Promise<void>((resolve) => socket.write(Buffer.concat([opening, Buffer.alloc(70 * 1024 - opening.length, 'x')]), () => resolve()));
  while (!socket.destroyed && sent < 16 * 1024 * 1024) {
    const error = await new Promise<Error | null | undefined>((resolve) => socket.write(chunk, resolve));
    if (error) break;
    sent += chunk.length;
  }
  await within(closed(socket), 'the collector closes the connection');
  assert.ok(sent < 16 * 1024 * 1024, 'the collector stopped reading well before the sender gave up');
  await eventually(async () => (await metricValue(tc.metrics.connectionsClosed, { listener: 'json', reason: 'too_large' })) === 1, 'counted as too_large');
  assert.equal(await metricValue(tc.metrics.rejected, { listener: 'json', reason: 'too_large' }), 1);
  assert.equal(await metricValue(tc.metrics.rejected, { listener: 'json', reason: 'malformed_json' }), 0, 'the rest is not read as more bad input');
  const tooLarge = tc.logs.find((e) => e.obj.reason === 'too_large' && e.level === 'warn')!;
  assert.ok(String(tooLarge.obj.excerpt).length < 200, 'a bad message is logged without its bytes in full');

  assert.equal(open(other), true, 'another connection is not affected');
  other.end(prediction(3));
  await within(closed(other), 'the other connection closed');
  await settle(tc);
  assert.deepStrictEqual((await allRecords(tc.store, 'battery-prediction')).map((r) => r.remaining_life_hours).sort(), [1, 2, 3]);
});
