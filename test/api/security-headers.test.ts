/**
 * Security headers on every kind of answer: the dashboard (/), a JSON API answer, an error, Swagger
 * UI (/docs) and its files, the live stream. The policy itself is checked in a real browser by the
 * e2e tests (no CSP violation on any view); here, that every answer carries it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildApp, call, listen } from '../support/helper.js';

const EXPECTED_POLICY = [
  "default-src 'self'",
  "base-uri 'self'",
  "connect-src 'self'",
  "font-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "img-src 'self' data:",
  "object-src 'none'",
  "script-src 'self'",
  "script-src-attr 'none'",
  "style-src 'self'",
];

/** Swagger UI's: the same, and the <style> of its logo allowed by its digest. */
const logoStyle = createHash('sha256').update('.logo_small_svg__cls-2{fill:#fff}.logo_small_svg__cls-3{fill:#85ea2d}').digest('base64');
const EXPECTED_DOCS_POLICY = EXPECTED_POLICY.map((directive) => (directive.startsWith('style-src ') ? `${directive} 'sha256-${logoStyle}'` : directive));

function assertSecurityHeaders(headers: Headers, what: string, expectedPolicy = EXPECTED_POLICY): void {
  const policy = headers.get('content-security-policy') ?? '';
  assert.deepEqual(
    policy
      .split(';')
      .map((directive) => directive.trim())
      .filter((directive) => directive !== ''),
    expectedPolicy,
    `${what}: Content-Security-Policy`,
  );
  assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval|upgrade-insecure-requests/, what);
  assert.equal(headers.get('x-content-type-options'), 'nosniff', `${what}: X-Content-Type-Options`);
  assert.equal(headers.get('x-frame-options'), 'DENY', `${what}: X-Frame-Options`);
  assert.equal(headers.get('referrer-policy'), 'no-referrer', `${what}: Referrer-Policy`);
  assert.equal(headers.get('strict-transport-security'), null, `${what}: no HSTS over plain http`);
}

describe('security headers', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildApp();
  });
  after(() => app.close());

  it('on the dashboard at /', async () => {
    const answer = await call(app, '/');
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type') ?? '', /text\/html/);
    assertSecurityHeaders(answer.headers, '/');
  });

  it('on a JSON API answer and on an error', async () => {
    const latest = await call(app, '/api/battery-data/latest');
    assert.equal(latest.status, 404);
    assertSecurityHeaders(latest.headers, 'GET /api/battery-data/latest');
    const stored = await call(app, '/api/battery-data', { body: { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 } });
    assert.equal(stored.status, 200);
    assertSecurityHeaders(stored.headers, 'POST /api/battery-data');
    const invalid = await call(app, '/api/battery-data', { body: '{' });
    assert.equal(invalid.status, 422);
    assertSecurityHeaders(invalid.headers, 'a 422');
    assertSecurityHeaders((await call(app, '/no-such-path')).headers, 'a 404');
    assertSecurityHeaders((await call(app, '/health')).headers, '/health');
  });

  it('on Swagger UI at /docs and its files', async () => {
    const page = await call(app, '/docs');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assertSecurityHeaders(page.headers, '/docs', EXPECTED_DOCS_POLICY);
    for (const file of ['/docs/static/swagger-ui-bundle.js', '/docs/static/swagger-ui.css', '/docs/static/swagger-initializer.js', '/docs/json']) {
      const answer = await call(app, file);
      assert.equal(answer.status, 200, file);
      assertSecurityHeaders(answer.headers, file, EXPECTED_DOCS_POLICY);
    }
    assertSecurityHeaders((await call(app, '/openapi.json')).headers, '/openapi.json');
  });

  it('on the live stream (written to the socket directly)', async (t) => {
    const streaming = await buildApp();
    t.after(() => streaming.close());
    const url = await listen(streaming);
    const abort = new AbortController();
    const response = await fetch(`${url}/api/stream`, { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(10_000)]) });
    try {
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
      assertSecurityHeaders(response.headers, '/api/stream');
    } finally {
      abort.abort();
    }
  });
});
