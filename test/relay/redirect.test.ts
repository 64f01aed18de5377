/**
 * The relay against an API that answers redirects (issue 15, item 12), and its warning when the key
 * would travel in clear. The API here is a real local HTTP server that records what it is sent.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { encodeFrame } from '../../src/collector/binary-decoder.js';
import { createCollectorMetrics, metricValue } from '../../src/collector/metrics.js';
import { loadConfig, type Config } from '../../src/config.js';
import { startStandaloneCollector, warnIfKeyInClear } from '../../src/relay/collect.js';
import { eventually, recordingLogger, sendChunks, within } from '../collector/helpers.js';
import { relayEnv } from '../support/relay-env.js';
import { tempDir } from '../support/temp-dir.js';

const API_KEY = 'relay-test-key-0123456789';

const settings = (extra: Record<string, string> = {}): Config => loadConfig(relayEnv(tempDir('relay-redirect-'), extra));

const frame = (n: number) => encodeFrame({ device_time: n, pack_voltage: 300 + n / 64, pack_current: -1, cell_temp: 25 });

test('an API answering 307/308: the relay logs it once with its Location, keeps the records, and delivers them all once it answers 200', async (t) => {
  let redirecting = true;
  let redirects = 0;
  const paths: string[] = [];
  const delivered: number[] = [];
  const api = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      paths.push(request.url ?? '');
      if (redirecting) {
        // A Location that carries a secret of its own: it is logged without query or credentials.
        const status = redirects++ % 2 === 0 ? 307 : 308;
        response.writeHead(status, { location: `https://someone:pw-in-location@api.example.org/v2${request.url}?token=hidden-token` }).end('moved');
        return;
      }
      for (const record of JSON.parse(Buffer.concat(chunks).toString()) as { pack_voltage: number }[]) delivered.push((record.pack_voltage - 300) * 64);
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"inserted":1}');
    });
  });
  await new Promise<void>((resolve) => api.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  const logger = recordingLogger();
  const metrics = createCollectorMetrics();
  const relay = await startStandaloneCollector(settings({ API_KEY }), { apiUrl, logger, metrics });
  t.after(async () => {
    await relay.close();
    api.closeAllConnections();
    await new Promise((resolve) => api.close(resolve));
  });

  const total = 500;
  await sendChunks(relay.collector.binaryPort, [Buffer.concat(Array.from({ length: total }, (_, n) => frame(n)))]);
  await eventually(() => redirects >= 3, 'three redirects answered (307 and 308)');
  assert.equal(relay.spool.depth().records, total, 'the records wait in the spool');
  assert.equal(delivered.length, 0);
  const reported = logger.entries.filter((e) => /redirect/.test(String(e.obj.why)));
  assert.equal(reported.length, 1, 'reported once, not per retry');
  assert.equal(reported[0]!.level, 'error');
  assert.equal(reported[0]!.obj.location, 'https://api.example.org/v2/api/battery-data');
  assert.match(String(reported[0]!.obj.why), /HTTP 30[78]\) to https:\/\/api\.example\.org\/v2\/api\/battery-data/);
  assert.ok(!logger.entries.some((e) => /detached/i.test(JSON.stringify(e))), 'no "detached ArrayBuffer"');

  redirecting = false;
  await eventually(() => relay.spool.depth().records === 0, 'the spool delivered once the API answers 200', 30_000);
  assert.deepStrictEqual(delivered.sort((a, b) => a - b), Array.from({ length: total }, (_, n) => n), 'every record, once');
  assert.ok(paths.every((p) => p === '/api/battery-data'), 'the Location was never followed');
  assert.equal(await metricValue(metrics.forwardedRecords), total);
  assert.ok(logger.entries.some((e) => /takes records again/.test(e.msg ?? '')));
  const logged = JSON.stringify(logger.entries);
  for (const secret of [API_KEY, 'hidden-token', 'pw-in-location']) assert.ok(!logged.includes(secret), `${secret} is never logged`);
});

test('start-up warns when --api is plain http to another host while API_KEY is set', async (t) => {
  const logger = recordingLogger();
  // The spool is empty: the relay has nothing to send, so it never contacts that address.
  const relay = await within(startStandaloneCollector(settings({ API_KEY }), { apiUrl: 'http://192.0.2.1:8000', logger }), 'relay started');
  t.after(() => relay.close());
  const warnings = logger.entries.filter((e) => /in clear/.test(e.msg ?? ''));
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0]!.level, 'warn');
  assert.match(warnings[0]!.msg!, /192\.0\.2\.1:8000/);
  assert.ok(!JSON.stringify(logger.entries).includes(API_KEY), 'the key itself is never logged');

  const quiet = (apiUrl: string, apiKey: string | undefined) => {
    const log = recordingLogger();
    warnIfKeyInClear(apiUrl, apiKey, log);
    return log.entries.length;
  };
  assert.equal(quiet('http://127.0.0.1:8000', API_KEY), 0, 'loopback');
  assert.equal(quiet('http://localhost:8000', API_KEY), 0);
  assert.equal(quiet('http://[::1]:8000', API_KEY), 0);
  assert.equal(quiet('https://192.0.2.1:8443', API_KEY), 0, 'https');
  assert.equal(quiet('http://192.0.2.1:8000', undefined), 0, 'no key to leak');
  assert.equal(quiet('http://api.example.org', API_KEY), 1, 'a host name other than localhost');
});
