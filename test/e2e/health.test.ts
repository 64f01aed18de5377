/**
 * The pack view's Health section in a real headless Chromium against the real service on a temp
 * SQLite store: the simulator's cycling scenario (30 cycles, a reading every 50 s, fading 10 points
 * per 100 cycles) goes in through the collector's JSON port; the section must show the service's
 * estimates with their intervals and segments, and draw state of health against cycles with the
 * projection to end of life, from the analytics' own records only. A pack never seen full or empty shows the reasons instead, and takes new
 * readings live. With analytics off, the section says so (the API's 503) and keeps retrying. Every
 * view visited must pass axe-core at WCAG 2.1 AA. Screenshots land in test-output/.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { sendJsonMessages, simulateCycling } from '../../src/simulator/cycling.js';
import type { BatteryHealth } from '../../web/src/generated/records.js';
import { startTestService } from '../support/service.js';
import { browserFixture, canvasPixelsNear, expectAccessible, OUTPUT, postRecords, type Rgb } from './browser.js';

/** The section fetches again at most every 3 s after a reading; leave room for a loaded machine. */
const LIVE_TIMEOUT_MS = 15_000;

const e2e = browserFixture({}, { collector: true });

/** Polls the API until `check` holds; fails after `ms` (every wait here is bounded). */
async function healthWhen(url: string, batteryId: string, check: (health: BatteryHealth) => boolean, what: string, ms = 120_000): Promise<BatteryHealth> {
  const deadline = Date.now() + ms;
  for (;;) {
    const response = await fetch(`${url}/api/batteries/${batteryId}/health`);
    if (response.status === 200) {
      const health = (await response.json()) as BatteryHealth;
      if (check(health)) return health;
    }
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const tile = (name: string) => e2e.page.locator(`[data-estimate="${name}"]`);
const oneDecimal = (value: number) => value.toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

/** Pixels of the chart's canvas close to a colour: proof that uPlot drew that part. */
const pixelsOf = (rgb: Rgb) => canvasPixelsNear(e2e.page, '[data-chart="soh"] canvas', rgb);

test("the pack view's Health section", { timeout: 300_000 }, async (t) => {
  const { page, service } = e2e;
  const [run] = simulateCycling({ batteryIds: ['cyc-1'], cycles: 30, intervalSeconds: 50, fadePer100Cycles: 10, seed: 3 });
  await sendJsonMessages('127.0.0.1', service.collector!.jsonPort, run!.messages);
  const lastAt = run!.messages.at(-1)!.timestamp;
  const health = await healthWhen(service.url, 'cyc-1', (h) => h.data_until === lastAt && h.rul_cycles.value !== null, 'the cycled pack taken, with a remaining life');
  // An outside predictor's record keeps its source: its cycle count is not the service's, and the chart leaves it out.
  await e2e.post('battery-performance', {
    battery_id: 'cyc-1',
    source: 'outside-predictor',
    pack_voltage: 400,
    pack_current: 0,
    cell_temp: 25,
    capacity_remaining: 50,
    cycle_count: 5,
    age_months: 1,
    health_score: 50,
  });
  // A pack that is never seen full or empty: counted, but no capacity, health or remaining life.
  const now = Date.now() / 1000;
  await e2e.post(
    'battery-data',
    [5, 4, 3, 2, 1].map((ago) => ({ battery_id: 'quiet-1', timestamp: now - ago * 10, pack_voltage: 395, pack_current: -10, cell_temp: 24 })),
  );

  await t.test('estimates with their intervals and segments, and the chart of state of health against cycles', async () => {
    await page.goto(`${service.url}/#/pack/cyc-1`);
    await tile('soh').locator('[data-interval]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    const soh = health.soh;
    assert.equal(await tile('soh').locator('[data-value]').innerText(), `${oneDecimal(soh.value!)} %`);
    assert.equal(await tile('soh').locator('[data-interval]').innerText(), `95 % interval: ${oneDecimal(soh.low!)}–${oneDecimal(soh.high!)} %`);
    assert.match(await tile('soh').innerText(), new RegExp(`from ${soh.segments} capacity segments`));
    assert.match(await tile('capacity').locator('[data-value]').innerText(), /^\d+\.\d Ah$/);
    assert.equal(await tile('cycles').locator('[data-value]').innerText(), oneDecimal(health.equivalent_cycles.value!));
    assert.match(await tile('soc').locator('[data-value]').innerText(), /^\d+\.\d %$/);
    assert.match(await tile('rul-cycles').locator('[data-value]').innerText(), /^[\d,]+ cycles$/);
    assert.match(await tile('rul-cycles').locator('[data-interval]').innerText(), /^95 % interval: [\d,]+(–[\d,]+ cycles| cycles or more)$/);
    assert.match(await tile('rul-hours').locator('[data-value]').innerText(), /^[\d,]+ h/);
    assert.match(await tile('ah-in').locator('[data-value]').innerText(), /^[\d,]+\.\d Ah$/);
    assert.match(await tile('wh-out').locator('[data-value]').innerText(), /^[\d,]+\.\d kWh$/);
    assert.equal(await page.locator('[data-health-section] [data-reason]').count(), 0, 'every estimate is known');

    const chart = page.locator('[data-chart="soh"]');
    await chart.locator('canvas').first().waitFor({ timeout: LIVE_TIMEOUT_MS });
    const summary = await chart.locator('[data-summary="soh"]').innerText();
    assert.match(summary, /State of health measured at \d+ whole cycles/);
    assert.match(summary, /projected to reach the end of life at 80 %/);
    await page.waitForTimeout(300); // let uPlot draw
    assert.ok((await pixelsOf([21, 128, 61])) > 50, 'the measured state of health is drawn (green)');
    assert.ok((await pixelsOf([29, 78, 216])) > 20, 'the projection is drawn (blue)');
    assert.ok((await pixelsOf([185, 28, 28])) > 50, 'the end-of-life threshold is drawn (red)');

    await chart.getByText('Table of the state of health by cycle').click();
    const rows = chart.locator('.data-table tbody tr');
    await rows.first().waitFor();
    assert.ok((await rows.count()) >= 25, `a row per whole cycle measured: ${await rows.count()}`);
    assert.doesNotMatch(await chart.locator('.data-table tbody').innerText(), /\b50\.0 %/, 'the outside predictor\'s record is not on the chart');
    await chart.screenshot({ path: path.join(OUTPUT, 'health-chart.png') });
    await page.screenshot({ path: path.join(OUTPUT, 'pack-health.png'), fullPage: true });
    await expectAccessible(page, 'pack view with health estimates');
  });

  await t.test('a pack with no estimates shows the reasons, and takes new readings live', async () => {
    await page.goto(`${service.url}/#/pack/quiet-1`);
    await tile('soh').locator('[data-reason]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.equal(await tile('soh').locator('[data-value]').innerText(), 'Not known yet');
    assert.match(await tile('soh').locator('[data-reason]').innerText(), /no anchor yet: the pack has not been seen full or empty/);
    assert.match(await tile('capacity').locator('[data-reason]').innerText(), /no anchor yet/);
    assert.match(await tile('soc').locator('[data-reason]').innerText(), /no anchor yet/);
    assert.match(await tile('rul-cycles').locator('[data-reason]').innerText(), /no anchor yet/);
    assert.match(await tile('ah-out').locator('[data-value]').innerText(), /^\d+\.\d Ah$/);
    assert.match(await page.locator('[data-chart-empty]').innerText(), /appears with the first capacity measured: no anchor yet/);
    const sectionText = await page.locator('[data-health-section]').innerText();
    assert.doesNotMatch(sectionText, /\bnull\b|undefined|NaN/);
    assert.match(sectionText, /5 readings taken/);
    await expectAccessible(page, 'pack view without health estimates');

    await page.locator('.conn-open').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await e2e.post('battery-data', { battery_id: 'quiet-1', pack_voltage: 395.2, pack_current: -11, cell_temp: 24.1 });
    await page.locator('[data-health-section]').getByText('6 readings taken').waitFor({ timeout: LIVE_TIMEOUT_MS });
  });

  await t.test('with analytics off, the section says why and keeps retrying', async () => {
    const off = await startTestService({ analyticsEnabled: false });
    try {
      await postRecords(off.url, 'battery-data', { battery_id: 'pack-1', pack_voltage: 398.2, pack_current: -12.5, cell_temp: 31.2 });
      await page.goto(`${off.url}/#/pack/pack-1`);
      const status = page.locator('[data-health-phase="unavailable"]');
      await status.waitFor({ timeout: LIVE_TIMEOUT_MS });
      assert.match(await status.innerText(), /^Not available yet \(analytics catches up with the stored readings after a start\): .+ Retrying\.$/);
      assert.equal(await page.locator('[data-health-section] [data-estimate]').count(), 0);
      await page.waitForRequest((request) => request.url().endsWith('/api/batteries/pack-1/health'), { timeout: LIVE_TIMEOUT_MS });
      await expectAccessible(page, 'pack view with analytics off');
    } finally {
      await off.close();
    }
  });
});
