/**
 * The dashboard in a real headless Chromium against the real service on a temp SQLite store:
 * readings go in through the API; the fleet and pack views must show them, a new reading must
 * arrive live (Server-Sent Events, no reload), and a temperature past the critical limit must turn
 * the pack critical. Every view visited must pass axe-core at WCAG 2.1 AA. Screenshots of both
 * views land in test-output/.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { browserFixture, expectAccessible, OUTPUT } from './browser.js';

/** Live updates must show within a second; leave room for a loaded CI machine. */
const LIVE_TIMEOUT_MS = 5000;

const e2e = browserFixture({}, { collector: true });
const post = e2e.post;

/** A gentle, realistic hour of history (one reading a minute) ending with the given reading. */
function hourOfReadings(batteryId: string, last: { pack_voltage: number; pack_current: number; cell_temp: number }) {
  const now = Date.now() / 1000;
  const readings = [];
  for (let minutesAgo = 58; minutesAgo >= 1; minutesAgo--) {
    const phase = minutesAgo / 9;
    readings.push({
      battery_id: batteryId,
      timestamp: now - minutesAgo * 60,
      pack_voltage: +(last.pack_voltage + 3 * Math.sin(phase) + minutesAgo * 0.05).toFixed(2),
      pack_current: +(last.pack_current + 25 * Math.cos(phase * 1.3)).toFixed(2),
      cell_temp: +(last.cell_temp - 2 + 2 * Math.sin(phase * 0.7)).toFixed(2),
    });
  }
  readings.push({ battery_id: batteryId, timestamp: now, ...last });
  return readings;
}

const rowCell = (batteryId: string, field: string) => e2e.page.locator(`tr[data-pack="${batteryId}"] [data-field="${field}"]`);
const liveTile = (field: string) => e2e.page.locator(`[data-live="${field}"]`);

test('the dashboard shows the fleet and a pack, live', { timeout: 180_000 }, async (t) => {
  const { page, service } = e2e;
  await t.test('an empty fleet says how to send the first reading', async () => {
    await page.goto(`${service.url}/`);
    await page.locator('#empty-title').waitFor();
    assert.match(await page.locator('.empty').innerText(), /curl -X POST/);
    await expectAccessible(page, 'empty fleet view');
  });

  await post('battery-data', hourOfReadings('pack-1', { pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 }));
  await post('battery-data', hourOfReadings('pack-2', { pack_voltage: 402.6, pack_current: 8.4, cell_temp: 27.9 }));
  const now = Date.now() / 1000;
  await post(
    'battery-performance',
    [0, 1, 2, 3].map((i) => ({
      battery_id: 'pack-1',
      timestamp: now - (3 - i) * 3600 * 5,
      pack_voltage: 398,
      pack_current: -12,
      cell_temp: 30,
      capacity_remaining: 88.1 - i * 0.2,
      cycle_count: 410 + i * 2,
      age_months: 18,
      health_score: 92.6 - i * 0.1,
    })),
  );
  await post(
    'battery-prediction',
    [0, 1, 2].map((i) => ({
      battery_id: 'pack-1',
      timestamp: now - (2 - i) * 3600 * 6,
      remaining_life_hours: 15_200 - i * 40,
      remaining_cycles: 1210 - i * 4,
      degradation_rate: 0.021,
    })),
  );

  await t.test('fleet view lists both packs with their latest values', async () => {
    await page.goto(`${service.url}/`);
    await rowCell('pack-1', 'voltage').waitFor();
    assert.equal(await page.locator('tr[data-pack]').count(), 2);
    assert.match(await rowCell('pack-1', 'voltage').innerText(), /^398\.2\s*V$/);
    assert.match(await rowCell('pack-1', 'temperature').innerText(), /^31\.2\s*°C$/);
    assert.match(await rowCell('pack-1', 'current').innerText(), /^-12\.5\s*A$/);
    assert.match(await rowCell('pack-1', 'health').innerText(), /^92\.3\s*%$/);
    assert.match(await rowCell('pack-1', 'remaining-life').innerText(), /15,120 h/);
    assert.match(await rowCell('pack-2', 'voltage').innerText(), /^402\.6\s*V$/);
    assert.match(await rowCell('pack-2', 'temperature').innerText(), /^27\.9\s*°C$/);
    assert.equal(await page.locator('tr[data-pack="pack-1"] [data-status]').getAttribute('data-status'), 'normal');
    assert.equal(await page.locator('[data-banner="unreachable"]').count(), 0);
    await expectAccessible(page, 'fleet view');
  });

  await t.test('pack view shows live values, charts and the CSV link', async () => {
    await page.locator('tr[data-pack="pack-1"] a[href="#/pack/pack-1"]').click();
    await page.locator('[data-pack-view="pack-1"]').waitFor();
    assert.match(page.url(), /#\/pack\/pack-1$/);
    assert.match(await liveTile('voltage').innerText(), /^398\.2\s*V$/);
    assert.match(await liveTile('current').innerText(), /^-12\.5\s*A$/);
    assert.match(await liveTile('temperature').innerText(), /^31\.2\s*°C$/);
    assert.match(await liveTile('health').innerText(), /92\.3 %/);
    assert.equal(await page.locator('.chart canvas').count() >= 3, true);
    const csv = page.getByRole('link', { name: /Download CSV/ });
    const href = await csv.getAttribute('href');
    assert.equal(href, '/api/battery-data/export?hours=1&battery_id=pack-1&format=csv');
    const download = await fetch(new URL(href!, service.url));
    assert.equal(download.status, 200);
    const lines = (await download.text()).trim().split('\n');
    assert.match(lines[0] ?? '', /pack_voltage/);
    assert.equal(lines.length, 1 + 59, 'header and the hour of readings');
    await expectAccessible(page, 'pack view');
  });

  await t.test('a new reading appears without reload', async () => {
    await page.locator('.conn-open').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await page.evaluate(() => Object.assign(window, { notReloaded: true }));
    await post('battery-data', { battery_id: 'pack-1', pack_voltage: 401.7, pack_current: -20.3, cell_temp: 33.4 });
    await page.waitForFunction(
      () => document.querySelector('[data-live="voltage"]')?.textContent?.startsWith('401.7'),
      undefined,
      { timeout: LIVE_TIMEOUT_MS },
    );
    assert.match(await liveTile('temperature').innerText(), /^33\.4\s*°C$/);
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true);
  });

  await t.test('a temperature past the critical limit turns the pack critical', async () => {
    const thresholds = (await (await fetch(`${service.url}/api/dashboard`)).json()) as {
      thresholds: { temperature: { critical_high: number } };
    };
    const hot = thresholds.thresholds.temperature.critical_high + 3.5;
    await post('battery-data', { battery_id: 'pack-1', pack_voltage: 399.1, pack_current: -35.2, cell_temp: hot });
    await page.locator('[data-pack-view="pack-1"] .pack-status [data-status="critical"]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.match(await page.locator('.findings').innerText(), /Temperature .* above the critical limit/);
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true);
    await page.waitForTimeout(300); // let the charts draw the last points
    await page.screenshot({ path: path.join(OUTPUT, 'pack.png'), fullPage: true });
    await expectAccessible(page, 'pack view of a critical pack');

    await page.getByRole('link', { name: 'All packs' }).click();
    await rowCell('pack-1', 'voltage').waitFor();
    assert.equal(await page.locator('tr[data-pack="pack-1"] [data-status]').getAttribute('data-status'), 'critical');
    assert.equal(await page.locator('tr[data-pack="pack-2"] [data-status]').getAttribute('data-status'), 'normal');
    assert.match(await rowCell('pack-1', 'temperature').innerText(), new RegExp(`^${hot.toFixed(1)}\\s*°C`));
    await expectAccessible(page, 'fleet view with a critical pack');
  });

  await t.test('a pack silent for over a minute stands out as stale', async () => {
    await post('battery-data', { battery_id: 'pack-3', timestamp: Date.now() / 1000 - 600, pack_voltage: 352.4, pack_current: 0, cell_temp: 22.5 });
    await page.locator('tr[data-pack="pack-3"] [data-stale="true"]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.match(await rowCell('pack-3', 'last-heard').innerText(), /10 min ago/);
    assert.equal(await page.locator('tr[data-pack="pack-1"] [data-stale]').count(), 0);
    assert.match(await page.locator('[data-banner="stale"]').innerText(), /1 of 3 packs has sent nothing/);
    await page.screenshot({ path: path.join(OUTPUT, 'fleet.png'), fullPage: true });
    await expectAccessible(page, 'fleet view with a stale pack');
  });

  await t.test('phone-sized screens get one card per pack', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await rowCell('pack-2', 'voltage').waitFor();
    const box = await page.locator('tr[data-pack="pack-1"]').boundingBox();
    assert.ok(box && box.width <= 390, 'the pack card fits the screen');
    await page.screenshot({ path: path.join(OUTPUT, 'fleet-phone.png'), fullPage: true });
    await expectAccessible(page, 'fleet view on a phone');
    await page.locator('tr[data-pack="pack-1"] a[href="#/pack/pack-1"]').click();
    await liveTile('voltage').waitFor();
    await page.waitForTimeout(300);
    await page.screenshot({ path: path.join(OUTPUT, 'pack-phone.png'), fullPage: true });
    await expectAccessible(page, 'pack view on a phone');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test('a banner says when the API is unreachable', async () => {
    await service.close();
    await page.locator('[data-banner="unreachable"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('.conn-down').count(), 1);
    await expectAccessible(page, 'pack view with the API unreachable');
  });
});
