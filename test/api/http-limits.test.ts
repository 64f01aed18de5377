/**
 * What an HTTP client can hold, on real sockets against the service: a request must arrive whole
 * within API_REQUEST_TIMEOUT, a silent connection goes after API_IDLE_TIMEOUT, connections past
 * API_MAX_CONNECTIONS are closed at once, a request refused before its body was read (401, 413)
 * closes its connection instead of waiting for the body, bodies nested deeper than a record needs
 * are refused before they are built, and the body limit still takes 10,000 records of the largest
 * kind. Every wait is bounded: a connection that is not closed fails the test instead of hanging it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BODY_LIMIT } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { JSON_LIMITS } from '../../src/http/json-body.js';
import type { Service } from '../../src/server.js';
import { startTestService } from '../support/service.js';

/** Long enough for any machine to close what it should; a connection still open then fails the test. */
const CLOSE_BOUND_MS = 20_000;

async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw HTTP/1.1 connection: what it has received so far, and when it closed. */
interface RawConnection {
  socket: net.Socket;
  received(): string;
  closed: Promise<void>;
  isClosed(): boolean;
}

/** Every raw connection a test opened, destroyed after it whatever happened: a service's close never waits for one. */
const opened = new Set<net.Socket>();
afterEach(() => {
  for (const socket of opened) socket.destroy();
  opened.clear();
});

async function connect(url: string): Promise<RawConnection> {
  const { hostname, port } = new URL(url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  opened.add(socket);
  let received = '';
  let closed = false;
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (received += chunk));
  // A reset is one way of being closed.
  socket.on('error', () => {});
  const closing = once(socket, 'close').then(() => {
    closed = true;
  });
  await once(socket, 'connect');
  return { socket, received: () => received, closed: closing, isClosed: () => closed };
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

function parseAnswer(text: string): RawAnswer | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
  const body = text.slice(end + 4);
  const length = Number(headers['content-length'] ?? NaN);
  if (Number.isFinite(length) && Buffer.byteLength(body, 'latin1') < length) return undefined;
  return { status: Number(statusLine.split(' ')[1]), headers, body };
}

/** Waits (bounded) until the connection holds a whole answer beyond the `skip` characters already read. */
async function answerOn(connection: RawConnection, what: string, skip = 0): Promise<RawAnswer> {
  return within(
    CLOSE_BOUND_MS,
    what,
    (async () => {
      for (;;) {
        const answer = parseAnswer(connection.received().slice(skip));
        if (answer !== undefined) return answer;
        if (connection.isClosed()) throw new Error(`${what}: closed without a whole answer: ${JSON.stringify(connection.received().slice(skip))}`);
        await sleep(20);
      }
    })(),
  );
}

const health = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

async function serviceWith(overrides: Partial<Config>): Promise<Service> {
  return startTestService(overrides);
}

describe('HTTP connections are bounded', () => {
  describe('API_REQUEST_TIMEOUT=2', () => {
    let service: Service;
    before(async () => {
      service = await serviceWith({ apiRequestTimeoutSeconds: 2, apiIdleTimeoutSeconds: 60 });
    });
    after(() => service.close());

    /** Sends `text` one byte every 500 ms (each byte keeps the connection from being idle) until it is all sent or the connection closes. */
    async function trickle(connection: RawConnection, text: string): Promise<number> {
      let sent = 0;
      while (sent < text.length && !connection.isClosed()) {
        connection.socket.write(text[sent]!);
        sent++;
        await Promise.race([sleep(500), connection.closed]);
      }
      return sent;
    }

    it('cuts a client that sends its headers one byte every 500 ms, with 408', async () => {
      const connection = await connect(service.url);
      const request = `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ${'slow'.repeat(20)}\r\n\r\n`;
      const sent = await within(CLOSE_BOUND_MS, 'the slow request is cut', Promise.all([trickle(connection, request), connection.closed]));
      assert.ok(sent[0] < request.length, `cut after ${sent[0]} of ${request.length} bytes`);
      const answer = parseAnswer(connection.received());
      assert.equal(answer?.status, 408, connection.received());
      assert.match(JSON.parse(answer.body).detail, /must arrive within 2 s/);
    });

    it('cuts a client that sends its body one byte every 500 ms, with 408', async () => {
      const connection = await connect(service.url);
      const body = JSON.stringify({ pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2, source: 'x'.repeat(60) });
      connection.socket.write(`POST /api/battery-data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
      const [sent] = await within(CLOSE_BOUND_MS, 'the slow body is cut', Promise.all([trickle(connection, body), connection.closed]));
      assert.ok(sent < body.length, `cut after ${sent} of ${body.length} bytes`);
      assert.equal(parseAnswer(connection.received())?.status, 408, connection.received());
    });

    it('still answers a client that sends its request at once', async () => {
      const connection = await connect(service.url);
      connection.socket.write(health);
      assert.equal((await answerOn(connection, '/health')).status, 200);
      connection.socket.destroy();
    });
  });

  describe('API_IDLE_TIMEOUT=1', () => {
    let service: Service;
    before(async () => {
      service = await serviceWith({ apiIdleTimeoutSeconds: 1 });
    });
    after(() => service.close());

    it('closes a connection that never sends a byte', async () => {
      const connection = await connect(service.url);
      await within(CLOSE_BOUND_MS, 'the silent connection is closed', connection.closed);
      assert.equal(connection.received(), '');
    });

    it('closes a kept-alive connection that stays silent after its answer', async () => {
      const connection = await connect(service.url);
      connection.socket.write(health);
      const answer = await answerOn(connection, '/health');
      assert.equal(answer.status, 200);
      assert.notEqual(answer.headers.connection, 'close', 'kept alive at first');
      await within(CLOSE_BOUND_MS, 'the idle kept-alive connection is closed', connection.closed);
    });
  });

  describe('API_MAX_CONNECTIONS=5', () => {
    let service: Service;
    before(async () => {
      service = await serviceWith({ apiMaxConnections: 5 });
    });
    after(() => service.close());

    it('closes the 6th connection at once while the 5 stay and are answered', async () => {
      const five = await Promise.all(Array.from({ length: 5 }, () => connect(service.url)));
      for (const connection of five) connection.socket.write(health);
      for (const connection of five) assert.equal((await answerOn(connection, 'one of the 5')).status, 200);

      const sixth = await connect(service.url);
      sixth.socket.write(health);
      await within(CLOSE_BOUND_MS, 'the 6th connection is closed', sixth.closed);
      assert.equal(sixth.received(), '', 'the 6th got no answer');

      for (const connection of five) {
        const before = connection.received().length;
        connection.socket.write(health);
        assert.equal((await answerOn(connection, 'one of the 5, again', before)).status, 200);
        assert.equal(connection.isClosed(), false);
      }
      for (const connection of five) connection.socket.destroy();
      await Promise.all(five.map((connection) => connection.closed));

      // Room again once they are gone.
      const later = await connect(service.url);
      later.socket.write(health);
      assert.equal((await answerOn(later, 'a connection after the 5 closed')).status, 200);
      later.socket.destroy();
    });
  });

  describe('a request refused before its body is read closes its connection', () => {
    const key = 'write-key-0123456789';
    let service: Service;
    // A request timeout far away: the connection can only close because of the answer.
    before(async () => {
      service = await serviceWith({ apiKey: key, apiRequestTimeoutSeconds: 3600, apiIdleTimeoutSeconds: 3600 });
    });
    after(() => service.close());

    const announce = (length: number, headers = '') =>
      `POST /api/battery-data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${headers}Content-Length: ${length}\r\n\r\n{"pack_voltage": 398.2,`;

    it('401 to a POST announcing 16 MB: answered and closed without the body', async () => {
      const connection = await connect(service.url);
      connection.socket.write(announce(16 * 1024 * 1024));
      const answer = await answerOn(connection, 'the 401');
      assert.equal(answer.status, 401);
      assert.equal(answer.headers.connection, 'close');
      assert.match(JSON.parse(answer.body).detail, /API key required/);
      await within(CLOSE_BOUND_MS, 'the connection after the 401 is closed', connection.closed);
    });

    it('413 to a POST announcing more than the body limit (with the key): answered and closed without the body', async () => {
      const connection = await connect(service.url);
      // Over the limit, under the 16 MiB it was before.
      connection.socket.write(announce(BODY_LIMIT + 1024 * 1024, `X-API-Key: ${key}\r\n`));
      const answer = await answerOn(connection, 'the 413');
      assert.equal(answer.status, 413);
      assert.equal(answer.headers.connection, 'close');
      assert.match(JSON.parse(answer.body).detail, /too large/i);
      await within(CLOSE_BOUND_MS, 'the connection after the 413 is closed', connection.closed);
    });

    it('a request answered after its body was read keeps its connection', async () => {
      const connection = await connect(service.url);
      const body = JSON.stringify({ pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 });
      connection.socket.write(`POST /api/battery-data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-API-Key: ${key}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      const answer = await answerOn(connection, 'the 200');
      assert.equal(answer.status, 200);
      assert.notEqual(answer.headers.connection, 'close');
      const before = connection.received().length;
      connection.socket.write(health);
      assert.equal((await answerOn(connection, '/health on the same connection', before)).status, 200);
      connection.socket.destroy();
    });
  });
});

describe('request bodies', () => {
  let service: Service;
  before(async () => {
    service = await serviceWith({});
  });
  after(() => service.close());

  const post = (kind: string, body: string) => fetch(`${service.url}/api/${kind}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  it('a 1 MB [[[…]]] body is refused as a JSON decode error, and /health answers right after', async () => {
    const half = 512 * 1024;
    const response = await post('battery-data', '['.repeat(half) + ']'.repeat(half));
    assert.equal(response.status, 422);
    const { detail } = (await response.json()) as { detail: { loc: string[]; msg: string; type: string }[] };
    assert.deepEqual(detail, [
      {
        loc: ['body'],
        msg: `JSON decode error: arrays and objects nested deeper than ${JSON_LIMITS.maxDepth} levels (at byte ${JSON_LIMITS.maxDepth}); a body is a record or an array of records`,
        type: 'value_error.jsondecode',
      },
    ]);
    assert.equal((await fetch(`${service.url}/health`)).status, 200);
  });

  it('a 1 MB body of deep objects is refused the same way', async () => {
    const levels = 100_000;
    const response = await post('battery-data', '{"a":'.repeat(levels) + '1' + '}'.repeat(levels));
    assert.equal(response.status, 422);
    const [error] = ((await response.json()) as { detail: { msg: string }[] }).detail;
    assert.match(error?.msg ?? '', /^JSON decode error: arrays and objects nested deeper than/);
  });

  it('a 1 MB body of shallow arrays, as costly to build, is refused too', async () => {
    const response = await post('battery-data', `[${'[[]],'.repeat(200_000)}[]]`);
    assert.equal(response.status, 422);
    const [error] = ((await response.json()) as { detail: { msg: string }[] }).detail;
    assert.match(error?.msg ?? '', new RegExp(`^JSON decode error: more than ${JSON_LIMITS.maxContainers} arrays and objects`));
    assert.equal((await fetch(`${service.url}/health`)).status, 200);
  });

  it('still takes 10,000 records of the largest kind with the longest strings, indented', async () => {
    const now = Date.now() / 1000;
    const records = Array.from({ length: 10_000 }, (_, i) => ({
      timestamp: now - 10_000 + i + 0.123456789,
      source: 's'.repeat(128),
      battery_id: `${'b'.repeat(59)}-${String(i % 100).padStart(4, '0')}`,
      pack_voltage: -3.4028234663852886e38,
      pack_current: 1.2345678901234567e-300,
      cell_temp: -2.2250738585072014e-308,
      capacity_remaining: 87.53333333333333,
      cycle_count: -9007199254740991,
      age_months: 18.123456789012345,
      health_score: 92.30000000000001,
    }));
    const body = JSON.stringify(records, null, 2);
    assert.ok(body.length > 5_500_000 && body.length < BODY_LIMIT, `${body.length} bytes`);
    const response = await post('battery-performance', body);
    assert.equal(response.status, 200, await response.clone().text());
    const answer = (await response.json()) as { ids?: string[] };
    assert.equal(answer.ids?.length, 10_000);
  });
});
