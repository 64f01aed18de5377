/**
 * The dashboard's session (POST/GET/DELETE /api/session) against the app: the cookie's
 * attributes, what it opens (every read, the SSE stream and the docs included) and what it does not
 * (writes), its expiry, that instances with the same keys accept each other's cookies, and that
 * neither key reaches a log.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SESSION_COOKIE, SESSION_TTL_SECONDS, sessionSigner, sessionValue } from '../../src/api/auth.js';
import type { FastifyInstance } from 'fastify';
import { spawnService } from '../support/child-service.js';
import { build, buildApp, call, listen } from '../support/helper.js';
import { tempDir } from '../support/temp-dir.js';
import { EXAMPLES } from './api-suite.js';

const WRITE_KEY = 'write-key-0123456789';
const READ_KEY = 'read-key-0123456789';

function signIn(target: FastifyInstance | string, key: string, headers: Record<string, string> = {}) {
  return call(target, '/api/session', { body: { key }, headers });
}

/** `name=value` of the session cookie a response sets, and its attributes. */
function sessionCookie(response: { headers: Headers }): { pair: string; attributes: string[] } {
  const line = response.headers.getSetCookie().find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`));
  assert.ok(line, `a ${SESSION_COOKIE} cookie is set`);
  const [pair, ...attributes] = line.split(';').map((part) => part.trim());
  return { pair: pair!, attributes: attributes.map((attribute) => attribute.toLowerCase()) };
}

const withCookie = (pair: string) => ({ headers: { cookie: pair } });

/** Opens the SSE stream (through a socket: it never ends) and answers its status and first chunk, then hangs up. */
async function openStream(url: string, headers: Record<string, string>): Promise<{ status: number; first: string }> {
  const controller = new AbortController();
  const response = await fetch(`${url}/api/stream`, { headers, signal: controller.signal });
  if (response.status !== 200) return { status: response.status, first: await response.text() };
  const reader = response.body!.getReader();
  const { value } = await reader.read();
  controller.abort();
  return { status: response.status, first: new TextDecoder().decode(value) };
}

describe('dashboard session with READ_API_KEY and API_KEY set', () => {
  let app: FastifyInstance;
  let cookie: string;
  before(async () => {
    app = await buildApp({ apiKey: WRITE_KEY, readApiKey: READ_KEY });
  });
  after(() => app.close());

  it('says a key is needed and nobody is signed in yet', async () => {
    const { status, body, headers } = await call(app, '/api/session');
    assert.equal(status, 200);
    assert.deepEqual(body, { key_required: true, signed_in: false, expires_at: null });
    assert.equal(headers.get('cache-control'), 'no-store');
  });

  it('refuses a wrong key with 401 and a clear message, and sets no cookie', async () => {
    const response = await signIn(app, 'not-the-key-at-all');
    assert.equal(response.status, 401);
    assert.match(response.body.detail, /^Wrong key: enter the READ_API_KEY \(or API_KEY\)/);
    assert.deepEqual(response.headers.getSetCookie(), []);
  });

  it('answers 422 naming the field when the key is missing or not a string', async () => {
    for (const body of [{}, { key: 42 }, { key: '' }, 'plain text', []]) {
      const { status, body: answer } = await call(app, '/api/session', { body: typeof body === 'string' ? JSON.stringify(body) : body });
      assert.equal(status, 422, JSON.stringify(body));
      assert.ok(Array.isArray(answer.detail) && answer.detail.length > 0);
      assert.equal(answer.detail[0].loc[0], 'body');
    }
    const missing = await call(app, '/api/session', { body: {} });
    assert.deepEqual(missing.body.detail[0].loc, ['body', 'key']);
  });

  it('trades the read key for an HttpOnly, SameSite=Strict, signed cookie that expires', async () => {
    const response = await signIn(app, READ_KEY);
    assert.equal(response.status, 204);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const { pair, attributes } = sessionCookie(response);
    assert.ok(attributes.includes('httponly'));
    assert.ok(attributes.includes('samesite=strict'));
    assert.ok(attributes.includes('path=/'));
    assert.ok(attributes.includes(`max-age=${SESSION_TTL_SECONDS}`));
    assert.ok(!attributes.includes('secure'), 'plain http: a Secure cookie would never come back');
    assert.ok(!pair.includes(READ_KEY), 'the cookie does not carry the key');
    cookie = pair;

    const status = (await call(app, '/api/session', withCookie(cookie))).body;
    assert.equal(status.signed_in, true);
    const now = Date.now() / 1000;
    assert.ok(status.expires_at > now + SESSION_TTL_SECONDS - 60 && status.expires_at <= now + SESSION_TTL_SECONDS + 1);
  });

  it('takes API_KEY to sign in as well', async () => {
    const response = await signIn(app, WRITE_KEY);
    assert.equal(response.status, 204);
    const { pair } = sessionCookie(response);
    assert.equal((await call(app, '/api/batteries', withCookie(pair))).status, 200);
  });

  it('marks the cookie Secure when the request came over https through a proxy', async () => {
    const response = await signIn(app, READ_KEY, { 'x-forwarded-proto': 'https' });
    assert.equal(response.status, 204);
    assert.ok(sessionCookie(response).attributes.includes('secure'));
  });

  it('opens every read with the cookie: records, fleet, dashboard, stream and docs', async () => {
    assert.ok(cookie, 'signed in by an earlier test');
    assert.equal((await call(app, '/api/dashboard')).status, 401, 'without it, refused');
    for (const path of ['/api/batteries', '/api/dashboard', '/api/battery-data/history', '/openapi.json', '/docs']) {
      assert.equal((await call(app, path, withCookie(cookie))).status, 200, path);
    }
    assert.equal((await call(app, '/api/battery-data/latest', withCookie(cookie))).status, 404, 'read, found nothing');
    const url = await listen(app);
    const stream = await openStream(url, withCookie(cookie).headers);
    assert.equal(stream.status, 200);
    assert.match(stream.first, /: connected/);
    assert.equal((await openStream(url, {})).status, 401, 'the stream needs it too');
  });

  it('never lets the cookie write', async () => {
    const { status, body } = await call(app, '/api/battery-data', { body: EXAMPLES['battery-data'], ...withCookie(cookie) });
    assert.equal(status, 401);
    assert.match(body.detail, /API key required/);
  });

  it('refuses a tampered, expired or over-long cookie with a message to sign in again', async () => {
    const [name, value] = cookie.split('=') as [string, string];
    const tampered = `${name}=${decodeURIComponent(value).replace(/^\d/, (digit) => String((Number(digit) + 1) % 10))}`;
    // Cookies signed as this service signs them: another process with the same keys derives the same secret.
    const signer = sessionSigner({ apiKey: WRITE_KEY, readApiKey: READ_KEY })!;
    const now = Math.floor(Date.now() / 1000);
    const expired = `${SESSION_COOKIE}=${encodeURIComponent(signer.sign(sessionValue(now - 5)))}`;
    const tooLong = `${SESSION_COOKIE}=${encodeURIComponent(signer.sign(sessionValue(now + 30 * 24 * 3600)))}`;
    const stillValid = `${SESSION_COOKIE}=${encodeURIComponent(signer.sign(sessionValue(now + 600)))}`;
    for (const bad of [tampered, expired, tooLong, `${SESSION_COOKIE}=garbage`]) {
      const { status, body } = await call(app, '/api/batteries', withCookie(bad));
      assert.equal(status, 401, bad);
      assert.equal(body.detail, 'Session expired or invalid: sign in again');
      assert.equal((await call(app, '/api/session', withCookie(bad))).body.signed_in, false);
    }
    assert.equal((await call(app, '/api/batteries', withCookie(stillValid))).status, 200);
  });

  it('lets a key header win over the cookie, so a wrong key is still refused', async () => {
    const { status } = await call(app, '/api/batteries', { headers: { cookie, 'x-api-key': 'wrong-key-000' } });
    assert.equal(status, 401);
  });

  it('signs out: DELETE clears the cookie', async () => {
    const response = await call(app, '/api/session', { method: 'DELETE', headers: { cookie } });
    assert.equal(response.status, 204);
    const { pair, attributes } = sessionCookie(response);
    assert.equal(pair, `${SESSION_COOKIE}=`);
    assert.ok(attributes.includes('max-age=0'));
    assert.ok(attributes.includes('path=/'));
  });

  it('documents the session routes with request and response schemas', async () => {
    const document = (await call(app, '/openapi.json', { headers: { 'x-api-key': READ_KEY } })).body;
    const session = document.paths['/api/session'];
    assert.deepEqual(Object.keys(session).sort(), ['delete', 'get', 'post']);
    for (const method of ['get', 'post', 'delete']) {
      assert.deepEqual(session[method].tags, ['Session']);
      assert.ok(session[method].summary);
      assert.deepEqual(session[method].security, [], `${method} needs no key`);
    }
    assert.ok(session.post.requestBody.content['application/json'].schema);
    assert.deepEqual(Object.keys(session.post.responses).sort(), ['204', '401', '409', '413', '415', '422']);
    assert.equal(session.post.responses['204'].content, undefined, '204 has no body');
    assert.ok(session.post.responses['204'].headers['set-cookie']);
    assert.ok(session.get.responses['200'].content['application/json'].schema);
  });
});

describe('sessions across instances and keys', () => {
  it('an instance with the same keys accepts the cookie; one with another key does not', async (t) => {
    const first = await build(t, { apiKey: WRITE_KEY, readApiKey: READ_KEY });
    const twin = await build(t, { apiKey: WRITE_KEY, readApiKey: READ_KEY });
    const rotated = await build(t, { apiKey: WRITE_KEY, readApiKey: 'read-key-rotated-0001' });
    const { pair } = sessionCookie(await signIn(first, READ_KEY));
    assert.equal((await call(twin, '/api/batteries', withCookie(pair))).status, 200, 'behind one load balancer');
    assert.equal((await call(rotated, '/api/batteries', withCookie(pair))).status, 401, 'a new key signs everyone out');
  });
});

describe('dashboard session with reads open', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp({ apiKey: WRITE_KEY });
  });
  after(() => app.close());

  it('says no key is needed, and has nothing to sign in to', async () => {
    assert.deepEqual((await call(app, '/api/session')).body, { key_required: false, signed_in: false, expires_at: null });
    const response = await signIn(app, WRITE_KEY);
    assert.equal(response.status, 409);
    assert.match(response.body.detail, /READ_API_KEY is not set/);
    assert.deepEqual(response.headers.getSetCookie(), []);
    assert.equal((await call(app, '/api/session', { method: 'DELETE' })).status, 204);
  });
});

describe('keys and the log', () => {
  it('neither key reaches the log, even at trace level, whatever the sign-in', { timeout: 60_000 }, async () => {
    const child = await spawnService(['serve'], { DATA_DIR: tempDir(), LOG_LEVEL: 'trace', API_KEY: WRITE_KEY, READ_API_KEY: READ_KEY });
    let output = '';
    child.child.stdout!.on('data', (chunk) => (output += chunk));
    child.child.stderr!.on('data', (chunk) => (output += chunk));
    try {
      const good = await signIn(child.url, READ_KEY);
      assert.equal(good.status, 204);
      const { pair } = sessionCookie(good);
      assert.equal((await signIn(child.url, `${READ_KEY}-wrong`)).status, 401);
      assert.equal((await call(child.url, '/api/batteries', withCookie(pair))).status, 200);
      assert.equal((await call(child.url, '/api/batteries', { headers: { 'x-api-key': READ_KEY } })).status, 200);
      assert.equal((await call(child.url, '/api/battery-data', { body: EXAMPLES['battery-data'], headers: { authorization: `Bearer ${WRITE_KEY}` } })).status, 200);
    } finally {
      child.child.kill('SIGTERM');
      await child.exited;
    }
    assert.match(output, /incoming request/, 'requests were logged at trace level');
    assert.ok(!output.includes(READ_KEY), 'READ_API_KEY is not in the log');
    assert.ok(!output.includes(WRITE_KEY), 'API_KEY is not in the log');
    assert.ok(!output.includes(SESSION_COOKIE + '='), 'nor the session cookie');
  });
});
