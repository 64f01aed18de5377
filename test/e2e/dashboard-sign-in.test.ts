/**
 * The dashboard behind READ_API_KEY, in a real headless Chromium against the real service: the page
 * asks for the key, refuses a wrong one with a clear message, trades the right one for an HttpOnly
 * session cookie that its fetches and the live stream (EventSource, which cannot send a key header)
 * carry, shows data arriving live, signs out, and asks again when the session ends. Every view
 * visited, the sign-in page in each of its states included, must pass axe-core at WCAG 2.1 AA.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { browserFixture, expectAccessible, OUTPUT } from './browser.js';

const WRITE_KEY = 'write-key-0123456789';
const READ_KEY = 'read-key-0123456789';
/** Live updates must show within a second; leave room for a loaded CI machine. */
const LIVE_TIMEOUT_MS = 5000;

const e2e = browserFixture({ apiKey: WRITE_KEY, readApiKey: READ_KEY });
const post = e2e.post;

const signInForm = () => e2e.page.locator('[data-view="sign-in"]');
const keyField = () => e2e.page.getByLabel('API key');
const rowCell = (batteryId: string, field: string) => e2e.page.locator(`tr[data-pack="${batteryId}"] [data-field="${field}"]`);
const sessionCookies = async () => (await e2e.context.cookies()).filter((cookie) => cookie.name === 'battery_session');
/** What the page itself gets from a read, with whatever cookie it holds. */
const pageRead = (path: string) => e2e.page.evaluate(async (url) => (await fetch(url, { credentials: 'same-origin' })).status, path);

async function signIn(key: string): Promise<void> {
  await keyField().fill(key);
  await e2e.page.getByRole('button', { name: 'Sign in' }).click();
}

test('the dashboard behind READ_API_KEY: sign in, live data, sign out', { timeout: 180_000 }, async (t) => {
  const { context, page, service } = e2e;
  const now = Date.now() / 1000;
  await post('battery-data', { battery_id: 'pack-1', timestamp: now - 2, pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 });
  await post('battery-performance', {
    battery_id: 'pack-1',
    timestamp: now - 2,
    pack_voltage: 398,
    pack_current: -12,
    cell_temp: 30,
    capacity_remaining: 88.1,
    cycle_count: 410,
    age_months: 18,
    health_score: 92.6,
  });

  await t.test('the page asks for the key instead of failing to load', async () => {
    await page.goto(`${service.url}/`);
    await signInForm().waitFor();
    assert.equal(await page.locator('h1').innerText(), 'Sign in');
    assert.equal(await page.locator('tr[data-pack]').count(), 0, 'no data without the key');
    assert.equal(await pageRead('/api/batteries'), 401);
    await expectAccessible(page, 'sign-in page');
  });

  await t.test('a wrong key is refused with a clear message', async () => {
    await signIn('not-the-right-key');
    await page.locator('#api-key-error').filter({ hasText: /Wrong key/ }).waitFor();
    assert.match(await page.locator('[role="alert"]#api-key-error').innerText(), /^Wrong key: enter the READ_API_KEY \(or API_KEY\)/);
    assert.equal(await keyField().getAttribute('aria-invalid'), 'true');
    assert.deepEqual(await sessionCookies(), []);
    await page.screenshot({ path: path.join(OUTPUT, 'sign-in-wrong-key.png'), fullPage: true });
    await expectAccessible(page, 'sign-in page with a wrong key');
  });

  await t.test('the right key signs in: an HttpOnly, SameSite=Strict cookie, the fleet with its data', async () => {
    await signIn(READ_KEY);
    await rowCell('pack-1', 'voltage').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.match(await rowCell('pack-1', 'voltage').innerText(), /^398\.2\s*V$/);
    assert.match(await rowCell('pack-1', 'health').innerText(), /^92\.6\s*%$/);
    const [cookie, ...others] = await sessionCookies();
    assert.ok(cookie, 'the session cookie is set');
    assert.equal(others.length, 0);
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(cookie.path, '/');
    assert.ok(!cookie.value.includes(READ_KEY), 'the cookie does not carry the key');
    assert.equal(await page.evaluate(() => document.cookie), '', 'page scripts cannot read it');
    assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1);
    await expectAccessible(page, 'fleet view, signed in');
  });

  await t.test('data arrives live over the stream the cookie opened', async () => {
    await page.locator('.conn-open').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await page.evaluate(() => Object.assign(window, { notReloaded: true }));
    await post('battery-data', { battery_id: 'pack-1', pack_voltage: 401.7, pack_current: -20.3, cell_temp: 33.4 });
    await post('battery-data', { battery_id: 'pack-2', pack_voltage: 352.4, pack_current: 3.1, cell_temp: 24.0 });
    await page.waitForFunction(
      () => document.querySelector('tr[data-pack="pack-1"] [data-field="voltage"]')?.textContent?.startsWith('401.7'),
      undefined,
      { timeout: LIVE_TIMEOUT_MS },
    );
    await rowCell('pack-2', 'voltage').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.match(await rowCell('pack-2', 'temperature').innerText(), /^24\.0\s*°C$/);
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true);
    await expectAccessible(page, 'fleet view, signed in, after live updates');
  });

  await t.test('the pack view reads its history and charts with the cookie', async () => {
    await page.locator('tr[data-pack="pack-1"] a[href="#/pack/pack-1"]').click();
    await page.locator('[data-pack-view="pack-1"]').waitFor();
    await page.locator('[data-live="voltage"]').filter({ hasText: /^401\.7/ }).waitFor();
    await page.locator('.chart canvas').first().waitFor();
    assert.equal(await page.locator('[data-banner="unreachable"]').count(), 0);
    await page.screenshot({ path: path.join(OUTPUT, 'pack-signed-in.png'), fullPage: true });
    await expectAccessible(page, 'pack view, signed in');
  });

  await t.test('signing out clears the cookie and brings back the sign-in page', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signInForm().waitFor();
    assert.match(await page.locator('.signin-notice').innerText(), /You are signed out/);
    assert.deepEqual(await sessionCookies(), []);
    assert.equal(await pageRead('/api/batteries'), 401);
    await page.screenshot({ path: path.join(OUTPUT, 'sign-in-signed-out.png'), fullPage: true });
    await expectAccessible(page, 'sign-in page after signing out');
    await page.reload();
    await signInForm().waitFor();
    assert.equal(await page.locator('tr[data-pack]').count(), 0);
  });

  await t.test('a session that ends while the page is open asks for the key again', async () => {
    await signIn(READ_KEY);
    await page.locator('[data-pack-view="pack-1"]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await page.locator('.conn-open').waitFor({ timeout: LIVE_TIMEOUT_MS });
    // As if the cookie expired: the next read (the other pack's history) answers 401.
    await context.clearCookies();
    await page.getByRole('link', { name: 'All packs' }).click();
    await page.locator('tr[data-pack="pack-2"] a[href="#/pack/pack-2"]').click();
    await signInForm().waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.match(await page.locator('.signin-notice').innerText(), /Your session has ended/);
    await expectAccessible(page, 'sign-in page after the session ended');
    await signIn(READ_KEY);
    await page.locator('[data-pack-view="pack-2"]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await page.locator('[data-live="voltage"]').filter({ hasText: /^352\.4/ }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  });

  await t.test('the sign-in page works on a phone-sized screen', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signInForm().waitFor();
    await page.setViewportSize({ width: 390, height: 844 });
    const box = await page.locator('.signin').boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 390, 'the form fits the screen');
    await page.screenshot({ path: path.join(OUTPUT, 'sign-in-phone.png'), fullPage: true });
    await expectAccessible(page, 'sign-in page on a phone');
  });
});
