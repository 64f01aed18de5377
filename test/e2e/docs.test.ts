/**
 * Swagger UI at /docs in a real headless Chromium under the service's Content-Security-Policy: the
 * manual renders, an operation runs from it (a fetch to the same origin), and the browser reports
 * no CSP violation on the way. Swagger UI is a third-party page: axe is not run on it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserFixture, expectNoCspViolation } from './browser.js';

const UI_TIMEOUT_MS = 15_000;

const e2e = browserFixture();

test('Swagger UI renders and runs a request under the CSP', { timeout: 120_000 }, async () => {
  const { page, service } = e2e;
  const answer = await page.goto(`${service.url}/docs`);
  assert.match(answer?.headers()['content-security-policy'] ?? '', /frame-ancestors 'none'/);
  await page.locator('.swagger-ui .info .title').filter({ hasText: 'Battery Monitoring API' }).waitFor({ timeout: UI_TIMEOUT_MS });

  const health = page.locator('.opblock-get').filter({ has: page.locator('[data-path="/health"]') }).first();
  await health.locator('.opblock-summary').click();
  await health.getByRole('button', { name: 'Try it out' }).click();
  await health.getByRole('button', { name: 'Execute' }).click();
  await health.locator('.live-responses-table .response-col_status').filter({ hasText: '200' }).first().waitFor({ timeout: UI_TIMEOUT_MS });

  expectNoCspViolation(page, 'Swagger UI at /docs');
});
