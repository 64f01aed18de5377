/**
 * What the browser tests share: their set-up (browserFixture: Debian's Chromium, installed with
 * apt-get when missing and running as root, playwright-core driving it and never downloading a
 * browser; a dashboard build that is not older than its sources; the service; a page), and the
 * checks every view must pass: axe-core at WCAG 2.1 AA, and no Content-Security-Policy violation
 * (the service's CSP must fit what its pages load).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Config } from '../../src/config.js';
import type { Service, ServiceOptions } from '../../src/server.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const OUTPUT = path.join(ROOT, 'test-output');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const AXE = path.join(ROOT, 'node_modules/axe-core/axe.min.js');
const WCAG_21_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

function ensureChromium(): void {
  if (existsSync(CHROMIUM)) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`No Chromium at ${CHROMIUM}: install Debian's chromium package (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  execFileSync('apt-get', ['update'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/**
 * Builds web/dist when it is missing or older than web/src, so a test never passes against a stale
 * page. The test files run in parallel processes: a lock directory (in the ignored test-output/)
 * keeps two builds from writing web/dist at once.
 */
async function ensureWebBuild(): Promise<void> {
  const index = path.join(ROOT, 'web/dist/index.html');
  const sources = Math.max(
    newestSource(path.join(ROOT, 'web/src')),
    statSync(path.join(ROOT, 'web/index.html')).mtimeMs,
    statSync(path.join(ROOT, 'web/vite.config.ts')).mtimeMs,
  );
  const fresh = () => existsSync(index) && statSync(index).mtimeMs >= sources;
  if (fresh()) return;
  mkdirSync(OUTPUT, { recursive: true });
  const lock = path.join(OUTPUT, '.web-build-lock');
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Another test process is building; a lock left by a killed run is dropped after 5 minutes.
      if (Date.now() - statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 300_000) rmdirSync(lock);
      await sleep(500);
    }
  }
  try {
    if (!fresh()) execFileSync('npx', ['vite', 'build', '--config', 'web/vite.config.ts'], { cwd: ROOT, stdio: 'inherit' });
  } finally {
    rmdirSync(lock);
  }
}

/** Chromium on a fresh, up-to-date dashboard build; the caller closes it. */
async function launchBrowser(): Promise<Browser> {
  ensureChromium();
  await ensureWebBuild();
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** The CSP violations each page has met so far; a page is in it once `newPage` made it. */
const cspViolations = new WeakMap<Page, string[]>();

/**
 * A new page that records every Content-Security-Policy violation: the browser's own console error
 * ("Refused to load … because it violates the following Content Security Policy directive") and the
 * securitypolicyviolation event, reported from every document the page loads. Page errors are printed.
 */
async function newPage(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  const violations: string[] = [];
  cspViolations.set(page, violations);
  page.on('pageerror', (error) => console.error('page error:', error));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content[- ]Security[- ]Policy/i.test(message.text())) violations.push(message.text());
  });
  await page.exposeFunction('reportCspViolation', (text: string) => violations.push(text));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      const report = (window as unknown as { reportCspViolation(text: string): void }).reportCspViolation;
      report(`securitypolicyviolation: ${event.effectiveDirective} blocked ${event.blockedURI || '(inline)'} in ${event.sourceFile}:${event.lineNumber}`);
    });
  });
  return page;
}

/** Fails when the page has met a CSP violation so far; `view` names the page in the message. */
export function expectNoCspViolation(page: Page, view: string): void {
  const violations = cspViolations.get(page);
  assert.ok(violations !== undefined, 'use the page of browserFixture(), which watches for CSP violations');
  assert.deepEqual(violations, [], `the ${view} met Content-Security-Policy violations`);
}

/** POSTs records of `kind` (one, or an array) to a service, with its write key when given; fails unless it answers 2xx. */
export async function postRecords(url: string, kind: string, body: unknown, apiKey?: string): Promise<void> {
  const answer = await call(url, `/api/${kind}`, { body, headers: apiKey === undefined ? {} : { 'X-API-Key': apiKey } });
  assert.ok(answer.status >= 200 && answer.status < 300, `POST /api/${kind} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
}

export interface BrowserFixture {
  readonly browser: Browser;
  /** The page's context: its cookies are the session's. */
  readonly context: BrowserContext;
  /** 1280×900, watched for CSP violations (expectNoCspViolation, expectAccessible). */
  readonly page: Page;
  readonly service: Service;
  /** postRecords to the service, with its API_KEY when it has one. */
  post(kind: string, body: unknown): Promise<void>;
}

/**
 * The set-up every browser test file shares, as node:test hooks of the file (call it at the top
 * level): Chromium on an up-to-date dashboard build, the service on free loopback ports and a fresh
 * SQLite directory (startTestService, with `config` and `options`), and one page; all closed after the
 * file. Its fields are set once the `before` hook has run: read them in the tests.
 */
export function browserFixture(config: Partial<Config> = {}, options?: ServiceOptions): BrowserFixture {
  const fixture = {
    post: (kind: string, body: unknown) => postRecords(fixture.service.url, kind, body, config.apiKey),
  } as { -readonly [K in keyof BrowserFixture]: BrowserFixture[K] };
  before(
    async () => {
      fixture.browser = await launchBrowser();
      fixture.service = await startTestService(config, options);
      fixture.context = await fixture.browser.newContext({ viewport: { width: 1280, height: 900 } });
      fixture.page = await newPage(fixture.context);
    },
    { timeout: 300_000 },
  );
  after(async () => {
    await fixture.browser?.close();
    await fixture.service?.close();
  });
  return fixture;
}

export type Rgb = [red: number, green: number, blue: number];

/**
 * The pixels of the canvas `selector` names that are close to a colour (each channel within 24, nearly
 * opaque): proof that the chart drew with it. -1 when there is no such canvas.
 */
export function canvasPixelsNear(page: Page, selector: string, rgb: Rgb): Promise<number> {
  return page.evaluate(
    ([selector, target]) => {
      const canvas = document.querySelector<HTMLCanvasElement>(selector);
      if (!canvas) return -1;
      const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
      let count = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i]! - target[0]) < 24 && Math.abs(data[i + 1]! - target[1]) < 24 && Math.abs(data[i + 2]! - target[2]) < 24 && data[i + 3]! > 200) count++;
      }
      return count;
    },
    [selector, rgb] as const,
  );
}

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  helpUrl: string;
  nodes: { target: unknown[]; html: string; failureSummary?: string }[];
}

/**
 * Runs axe-core on the page as it is now, at WCAG 2.0/2.1 A and AA, and expects no violation;
 * prints each one (rule, element, why) when there are some. Checks that no CSP violation came
 * first. `view` names the page in the message.
 */
export async function expectAccessible(page: Page, view: string): Promise<void> {
  expectNoCspViolation(page, view);
  // Evaluated rather than added as a <script>: the page's CSP refuses inline scripts, as it should.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(readFileSync(AXE, 'utf8'));
  const violations = await page.evaluate(async (tags) => {
    const axe = (window as unknown as { axe: { run(context: Document, options: object): Promise<{ violations: Violation[] }> } }).axe;
    const result = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return result.violations.map(({ id, impact, help, helpUrl, nodes }) => ({
      id,
      impact,
      help,
      helpUrl,
      nodes: nodes.map(({ target, html, failureSummary }) => ({ target, html, failureSummary })),
    }));
  }, WCAG_21_AA);
  if (violations.length > 0) {
    const report = violations
      .map(
        (violation) =>
          `- ${violation.id} (${violation.impact}): ${violation.help} <${violation.helpUrl}>\n` +
          violation.nodes
            .map((node) => `    ${node.target.join(' ')}\n      ${node.html}\n      ${(node.failureSummary ?? '').replace(/\n/g, '\n      ')}`)
            .join('\n'),
      )
      .join('\n');
    console.error(`axe: ${violations.length} WCAG 2.1 AA violation(s) on the ${view}:\n${report}`);
  }
  assert.deepEqual(
    violations.map((violation) => violation.id),
    [],
    `the ${view} has WCAG 2.1 AA violations (details above)`,
  );
}
