/**
 * Swagger UI at /docs in a real headless Chromium under the service's Content-Security-Policy: the
 * manual renders, an operation runs from it (a fetch to the same origin), and the browser reports
 * no CSP violation on the way. Swagger UI is a third-party page: axe is not run on it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { Service } from '../../src/server.js';
import { startTestService } from '../support/service.js';
import { expectNoCspViolation, launchBrowser, newPage } from './browser.js';

const UI_TIMEOUT_MS = 15_000;

let service: Service;
let browser: Browser;
let page: Page;

before(
  async () => {
    browser = await launchBrowser();
    service = await startTestService();
    page = await newPage(browser, { viewport: { width: 1280, height: 900 } });
  },
  { timeout: 300_000 },
);

after(async () => {
  await browser?.close();
  await service?.close();
});

test('Swagger UI renders and runs a request under the CSP', { timeout: 120_000 }, async () => {
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
