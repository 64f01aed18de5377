/**
 * The webhook receivers' name lookup (src/alarms/receiver-lookup.ts): bounded, shared per name,
 * cached, failures included, with the system's own lookup underneath; and a request by name through
 * undici with it, to a real local server.
 */
import assert from 'node:assert/strict';
import dns, { type LookupAddress } from 'node:dns';
import { createServer } from 'node:http';
import type { AddressInfo, LookupFunction } from 'node:net';
import { describe, it } from 'node:test';
import { Agent, fetch } from 'undici';
import { MAX_LOOKUPS, receiverLookup } from '../../src/alarms/receiver-lookup.js';

function lookup(fn: LookupFunction, hostname: string, options: dns.LookupOptions = {}): Promise<{ address: string | LookupAddress[]; family?: number }> {
  return new Promise((resolve, reject) => fn(hostname, options, (error, address, family) => (error ? reject(error) : resolve({ address, family }))));
}

/** The system's lookup of localhost, whatever the name asked, held until `release` while `holding`. */
function heldSystemLookup() {
  const asked: string[] = [];
  let running = 0;
  let most = 0;
  let releases: (() => void)[] = [];
  return {
    asked,
    most: () => most,
    waiting: () => releases.length,
    release() {
      for (const release of releases.splice(0)) release();
    },
    async lookupAll(hostname: string) {
      asked.push(hostname);
      running++;
      most = Math.max(most, running);
      await new Promise<void>((resolve) => releases.push(resolve));
      running--;
      return dns.promises.lookup('localhost', { all: true, order: 'verbatim' });
    },
  };
}

async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    assert.ok(Date.now() < deadline, 'gave up waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('receiver lookup', () => {
  it(`runs at most ${MAX_LOOKUPS} lookups at once (half of libuv's pool) and one per name for every caller`, async () => {
    const system = heldSystemLookup();
    const fn = receiverLookup({ lookupAll: (name) => system.lookupAll(name) });
    const names = Array.from({ length: 6 }, (_, i) => `receiver-${i}.test`);
    // Each name asked three times at once: one lookup serves all three.
    const answers = Promise.all(names.flatMap((name) => [1, 2, 3].map(() => lookup(fn, name, { all: true }))));
    for (let done = 0; done < names.length; done += MAX_LOOKUPS) {
      await until(() => system.waiting() === Math.min(MAX_LOOKUPS, names.length - done));
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(system.waiting(), Math.min(MAX_LOOKUPS, names.length - done));
      system.release();
    }
    const results = await answers;
    assert.equal(system.most(), MAX_LOOKUPS);
    assert.deepEqual([...system.asked].sort(), names);
    for (const { address } of results) assert.ok(Array.isArray(address) && address.length > 0);
  });

  it('keeps an answer for its time, a failure too, then asks again', async () => {
    let clock = 1_000_000;
    const asked: string[] = [];
    const fn = receiverLookup({
      cacheMs: 30_000,
      now: () => clock,
      lookupAll: (name) => {
        asked.push(name);
        return dns.promises.lookup(name, { all: true });
      },
    });
    const first = await lookup(fn, 'localhost', { family: 4 });
    assert.deepEqual(first, { address: '127.0.0.1', family: 4 });
    await lookup(fn, 'localhost', { family: 4 });
    // .invalid never resolves (RFC 6761): the failure is handed on, and kept.
    await assert.rejects(lookup(fn, 'no-such-receiver.invalid'), { code: 'ENOTFOUND' });
    await assert.rejects(lookup(fn, 'no-such-receiver.invalid'), { code: 'ENOTFOUND' });
    assert.deepEqual(asked, ['localhost', 'no-such-receiver.invalid']);
    clock += 30_000;
    await lookup(fn, 'localhost', { all: true });
    await assert.rejects(lookup(fn, 'no-such-receiver.invalid'), { code: 'ENOTFOUND' });
    assert.deepEqual(asked, ['localhost', 'no-such-receiver.invalid', 'localhost', 'no-such-receiver.invalid']);
  });

  it('carries a request by name through undici to a real local server', async () => {
    const server = createServer((_, response) => response.end('taken'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const agent = new Agent({ connect: { lookup: receiverLookup() } });
    try {
      const { port } = server.address() as AddressInfo;
      const response = await fetch(`http://localhost:${port}/hook`, { method: 'POST', body: '{}', dispatcher: agent });
      assert.equal(response.status, 200);
      assert.equal(await response.text(), 'taken');
    } finally {
      await agent.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
