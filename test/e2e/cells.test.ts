/**
 * The pack view's Cells section in a real headless Chromium against the real service on a temp
 * SQLite store: a reading with 96 cell voltages (one weak cell) and 24 cell temperatures (one hot
 * sensor) goes in over HTTP; the section must draw a bar per cell, give the lowest, highest and delta,
 * and name the outliers; a new reading with other cells must replace them live (Server-Sent Events,
 * no reload); 1,024 cells must still draw; a pack whose latest reading has no cells shows no section.
 * Every view visited must pass axe-core at WCAG 2.1 AA. Screenshots land in test-output/.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { browserFixture, canvasPixelsNear, expectAccessible, OUTPUT, type Rgb } from './browser.js';

/** Live updates show within a second; leave room for a loaded machine. */
const LIVE_TIMEOUT_MS = 10_000;

const e2e = browserFixture();
const post = (body: unknown) => e2e.post('battery-data', body);

const reading = (batteryId: string, cells: Record<string, number[]> = {}) => ({ battery_id: batteryId, pack_voltage: 316.8, pack_current: -12, cell_temp: 25.4, ...cells });

/** 96 cells within ±5 mV of 3.300 V (median 3.300 V), but cell 17 at 3.180 V: 120 mV low. Highest: cell 4, 3.305 V. */
const FIRST_VOLTAGES = Array.from({ length: 96 }, (_, i) => (i === 16 ? 3.18 : +(3.3 + (((i * 7) % 11) - 5) / 1000).toFixed(3)));
/** 24 sensors from 25.0 to 25.8 °C (median 25.4 °C), but sensor 5 at 41.0 °C. */
const FIRST_TEMPS = Array.from({ length: 24 }, (_, i) => (i === 4 ? 41 : +(25 + ((i * 3) % 5) * 0.2).toFixed(1)));
/** 96 cells within ±4 mV of 3.310 V, but cell 60 at 3.420 V: 110 mV high. Lowest: cell 1, 3.306 V. */
const SECOND_VOLTAGES = Array.from({ length: 96 }, (_, i) => (i === 59 ? 3.42 : +(3.31 + (((i * 5) % 9) - 4) / 1000).toFixed(3)));
/** 1,024 cells with ±8 mV of ripple around 3.700 V, cell 100 60 mV low and cell 1,000 45 mV high. */
const MANY_VOLTAGES = Array.from({ length: 1024 }, (_, i) =>
  i === 99 ? 3.64 : i === 999 ? 3.745 : +(3.7 + 0.008 * Math.sin(i * 1.7) * Math.cos(i * 0.3)).toFixed(3),
);

const chart = (key: 'voltage' | 'temperature') => e2e.page.locator(`[data-cell-chart="${key}"]`);
const stat = (key: 'voltage' | 'temperature', name: string) => chart(key).locator(`[data-stat="${name}"]`);
/** The number of bars uPlot holds (the chart writes it on its canvas' container after each update). */
const bars = (key: 'voltage' | 'temperature', count: number) => chart(key).locator(`.chart-canvas[data-bars="${count}"]`).waitFor({ timeout: LIVE_TIMEOUT_MS });
const outliers = (key: 'voltage' | 'temperature') => chart(key).locator('li[data-outlier]');

/** Pixels of a chart's canvas close to a colour: proof that uPlot drew bars of it. */
const pixelsOf = (key: 'voltage' | 'temperature', rgb: Rgb) => canvasPixelsNear(e2e.page, `[data-cell-chart="${key}"] canvas`, rgb);

const BLUE: Rgb = [29, 78, 216];
const RED: Rgb = [185, 28, 28];

async function tableRows(key: 'voltage' | 'temperature') {
  const details = chart(key).locator('details');
  if (!(await details.evaluate((element) => (element as HTMLDetailsElement).open))) await details.locator('summary').click();
  const rows = chart(key).locator('.data-table tbody tr');
  await rows.first().waitFor({ timeout: LIVE_TIMEOUT_MS });
  return rows;
}

test("the pack view's Cells section", { timeout: 180_000 }, async (t) => {
  const { page, service } = e2e;
  await post(reading('cells-1', { cell_voltages: FIRST_VOLTAGES, cell_temps: FIRST_TEMPS }));
  await post(reading('plain-1'));

  await t.test('a bar per cell, the lowest, highest and delta, and the outliers named', async () => {
    await page.goto(`${service.url}/#/pack/cells-1`);
    await chart('voltage').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await bars('voltage', 96);
    assert.equal(await stat('voltage', 'min').innerText(), '3.180 V (cell 17)');
    assert.equal(await stat('voltage', 'max').innerText(), '3.305 V (cell 4)');
    assert.equal(await stat('voltage', 'delta').innerText(), '125 mV');
    assert.equal(await stat('voltage', 'median').innerText(), '3.300 V');
    assert.deepEqual(await outliers('voltage').allInnerTexts(), ['Cell 17: 3.180 V, 120 mV below the median']);
    assert.match(await chart('voltage').innerText(), /Outlier: more than 3\.5 robust standard deviations .* and more than 20 mV from the median, here outside 3\.280 V to 3\.320 V/);

    // Hovering a bar shows its cell and value in the chart's legend: the cells' plot area is 96 equal columns.
    const plotArea = (await chart('voltage').locator('.u-over').boundingBox())!;
    await page.mouse.move(plotArea.x + (16.5 / 96) * plotArea.width, plotArea.y + plotArea.height / 2);
    assert.deepEqual(await chart('voltage').locator('.u-legend .u-value').allInnerTexts(), ['17', '3.180 V (−120 mV), outlier']);

    const rows = await tableRows('voltage');
    assert.equal(await rows.count(), 96, 'a row per cell');
    assert.deepEqual(await chart('voltage').locator('.data-table tbody tr[data-outlier] td').allInnerTexts(), ['17', '3.180 V', '−120 mV', '▼ outlier']);

    await bars('temperature', 24);
    assert.equal(await stat('temperature', 'max').innerText(), '41.0 °C (sensor 5)');
    assert.equal(await stat('temperature', 'delta').innerText(), '16.0 °C');
    assert.deepEqual(await outliers('temperature').allInnerTexts(), ['Sensor 5: 41.0 °C, 15.6 °C above the median']);

    await page.waitForTimeout(300); // let uPlot draw
    assert.ok((await pixelsOf('voltage', BLUE)) > 500, 'the cells are drawn as blue bars');
    assert.ok((await pixelsOf('voltage', RED)) > 20, 'the outlier is drawn red, with its ▼');
    await page.locator('[data-cells-section]').screenshot({ path: path.join(OUTPUT, 'pack-cells.png') });
    await expectAccessible(page, 'pack view with cells');
  });

  await t.test('a new reading with other cells replaces them live', async () => {
    await page.locator('.conn-open').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await post(reading('cells-1', { cell_voltages: SECOND_VOLTAGES }));
    await chart('voltage').locator('li[data-outlier="60"]').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.deepEqual(await outliers('voltage').allInnerTexts(), ['Cell 60: 3.420 V, 110 mV above the median']);
    assert.equal(await stat('voltage', 'min').innerText(), '3.306 V (cell 1)');
    assert.equal(await stat('voltage', 'delta').innerText(), '114 mV');
    await bars('voltage', 96);
    const rows = await tableRows('voltage');
    assert.equal(await rows.count(), 96);
    assert.equal(await chart('temperature').count(), 0, 'the new reading has no temperatures');
    await expectAccessible(page, 'pack view with cells, updated live');
  });

  await t.test('1,024 cells', async () => {
    await post(reading('cells-big', { cell_voltages: MANY_VOLTAGES }));
    await page.goto(`${service.url}/#/pack/cells-big`);
    await chart('voltage').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await bars('voltage', 1024);
    assert.deepEqual(await outliers('voltage').evaluateAll((items) => items.map((item) => item.getAttribute('data-outlier'))), ['100', '1000']);
    assert.equal(await stat('voltage', 'min').innerText(), '3.640 V (cell 100)');
    await page.waitForTimeout(300);
    assert.ok((await pixelsOf('voltage', BLUE)) > 500, 'the cells are drawn');
    assert.ok((await pixelsOf('voltage', RED)) > 20, 'the outliers are drawn red, with their ▼');
    assert.equal(await (await tableRows('voltage')).count(), 1024);
    await page.locator('[data-cells-section]').screenshot({ path: path.join(OUTPUT, 'pack-cells-1024.png') });
    await expectAccessible(page, 'pack view with 1,024 cells');
  });

  await t.test('a pack without cells has no Cells section', async () => {
    await page.goto(`${service.url}/#/pack/plain-1`);
    await page.locator('[data-live="voltage"]').getByText('316.8').waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.equal(await page.locator('[data-cells-section]').count(), 0);
    await expectAccessible(page, 'pack view without cells');
  });
});
