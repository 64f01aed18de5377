/**
 * Alarms in a real headless Chromium against the real service on a temp SQLite store: a reading past
 * the critical temperature raises an alarm that appears live (no reload) on the Alarms page and in
 * the fleet view, is acknowledged from the page with a note, shows as a period on the pack's charts,
 * and clears when the temperature comes back. Every view visited passes axe-core at WCAG 2.1 AA.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { browserFixture, expectAccessible, OUTPUT } from './browser.js';

/** The page reloads open alarms shortly after records arrive, and on `event: alarm`; room for a loaded machine. */
const LIVE_TIMEOUT_MS = 10_000;
const PACK = 'alarm-pack-1';

const e2e = browserFixture();
const post = (body: unknown) => e2e.post('battery-data', body);

const reading = (cell_temp: number, secondsAgo = 0) => ({
  battery_id: PACK,
  timestamp: Date.now() / 1000 - secondsAgo,
  pack_voltage: 398,
  pack_current: -10,
  cell_temp,
});

test('an alarm appears live, is acknowledged from the page, and clears', { timeout: 180_000 }, async () => {
  const { page, service } = e2e;
  // Minutes apart: the jump to 65 °C is then no rate of rise (its window holds one reading), only the critical level.
  await post([reading(30, 600), reading(31, 300)]);
  await page.goto(`${service.url}/#/alarms`);
  await page.locator('[data-field="open-count"]', { hasText: 'No open alarms.' }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await expectAccessible(page, 'alarms page without alarms');

  // Past critical_high (60 °C): the default temperature rule raises a critical alarm, shown without a reload.
  await post(reading(65));
  const openRow = page.locator(`table[data-table="open"] tr[data-alarm^="temperature~${PACK}~"]`);
  await openRow.waitFor({ timeout: LIVE_TIMEOUT_MS });
  assert.equal(await openRow.getAttribute('data-state'), 'active');
  assert.match(await openRow.innerText(), /Critical/);
  assert.match(await page.locator('[data-nav="alarms"]').innerText(), /1/);
  await expectAccessible(page, 'alarms page with an open alarm');

  await openRow.getByRole('button', { name: /Acknowledge/ }).click();
  const form = page.getByRole('form', { name: new RegExp(`Acknowledge .* on ${PACK}`) });
  await expectAccessible(page, 'alarms page with the acknowledge form');
  await form.getByLabel('Acknowledged by').fill('night shift');
  await form.getByLabel('Note').fill('fan checked');
  await form.getByRole('button', { name: 'Acknowledge' }).click();
  await page.locator(`table[data-table="open"] tr[data-state="acknowledged"]`).waitFor({ timeout: LIVE_TIMEOUT_MS });
  assert.match(await page.locator('table[data-table="open"] tr[data-state="acknowledged"]').innerText(), /night shift: fan checked/);
  await page.screenshot({ path: path.join(OUTPUT, 'alarms.png'), fullPage: true });

  // The fleet view counts the pack's open alarms, from the alarms.
  await page.goto(`${service.url}/#/`);
  const cell = page.locator(`tr[data-pack="${PACK}"] [data-field="alarms"]`);
  await cell.filter({ hasText: '1 open, worst critical' }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await expectAccessible(page, 'fleet view with an open alarm');

  // The pack view lists it and shades its period on the charts.
  await page.goto(`${service.url}/#/pack/${PACK}`);
  await page.locator(`.pack-alarms li[data-state="acknowledged"]`).waitFor({ timeout: LIVE_TIMEOUT_MS });
  assert.match(await page.locator('#chart-cell_temp-title ~ p').innerText(), /1 alarm period .*still open/);
  await expectAccessible(page, 'pack view with an alarm period');
  await page.screenshot({ path: path.join(OUTPUT, 'pack-alarm.png'), fullPage: true });

  // Back below the level by more than the hysteresis: it clears, live.
  await page.goto(`${service.url}/#/alarms`);
  await page.locator(`table[data-table="open"] tr[data-state="acknowledged"]`).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await post(reading(40));
  await page.locator('[data-field="open-count"]', { hasText: 'No open alarms.' }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await page.locator(`table[data-table="history"] tr[data-state="cleared"]`).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await expectAccessible(page, 'alarms page after the clear');
});
