/**
 * The app for API tests, as fastify/demo's test/helper.ts: `build(t)` registers the app on a
 * Fastify instance over a temporary SQLite store (or the store the settings name) and closes it
 * after the test; `call` answers through `inject`, no socket. The settings are the schema's
 * defaults and the overrides, never the environment: a developer's .env stays out of the tests.
 */
import type { TestContext } from 'node:test';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { appServerOptions, batteryMonitor } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { tempDir } from './temp-dir.js';

/** Default settings, a fresh data directory, every listener on loopback and a free port, no log. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return {
    ...loadConfig({}),
    dataDir: tempDir(),
    apiHost: '127.0.0.1',
    apiPort: 0,
    collectorHost: '127.0.0.1',
    collectorBinaryPort: 0,
    collectorJsonPort: 0,
    collectorV2Port: 0,
    logLevel: 'silent',
    ...overrides,
  };
}

/** The app, ready, closed after the test (fastify/demo's helper). */
export async function build(t: Pick<TestContext, 'after'>, overrides: Partial<Config> = {}): Promise<FastifyInstance> {
  const app = await buildApp(overrides);
  t.after(() => app.close());
  return app;
}

/** The app, ready; the caller closes it (a suite: `before` builds it, `after` closes it). */
export async function buildApp(overrides: Partial<Config> = {}): Promise<FastifyInstance> {
  const config = testConfig(overrides);
  const loggerInstance: FastifyBaseLogger = createLogger({ level: config.logLevel });
  const app = Fastify({ ...appServerOptions(config), loggerInstance });
  try {
    await app.register(batteryMonitor, { config });
    await app.ready();
  } catch (error) {
    await app.close();
    throw error;
  }
  return app;
}

/** Makes the app listen on a free loopback port (for what needs a socket: a live stream) and answers its URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  return app.listen({ host: '127.0.0.1', port: 0 });
}

export interface Answer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface CallInit {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

/**
 * A request with JSON in and out: through `inject` for an app, through a socket (fetch) for a URL
 * (a service in a child process). The body is parsed when it is JSON, else kept as text.
 */
export async function call<T = any>(target: FastifyInstance | string, path: string, init: CallInit = {}): Promise<Answer<T>> {
  const method = init.method ?? (init.body === undefined ? 'GET' : 'POST');
  const headers = { ...(init.body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers };
  const payload = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  let answer: { status: number; text: string; headers: Headers };
  if (typeof target === 'string') {
    const response = await fetch(target + path, { method, headers, body: payload });
    answer = { status: response.status, text: await response.text(), headers: response.headers };
  } else {
    const response = await target.inject({ method: method as 'GET', url: path, headers, ...(payload === undefined ? {} : { payload }) });
    const responseHeaders = new Headers();
    for (const [name, value] of Object.entries(response.headers)) {
      for (const one of Array.isArray(value) ? value : value === undefined ? [] : [value]) responseHeaders.append(name, String(one));
    }
    answer = { status: response.statusCode, text: response.body, headers: responseHeaders };
  }
  let body: any = answer.text;
  try {
    body = JSON.parse(answer.text);
  } catch {
    // not JSON: keep the text
  }
  return { status: answer.status, body, headers: answer.headers };
}
