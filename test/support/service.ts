import type { Config } from '../../src/config.js';
import { startService, type Service, type ServiceOptions } from '../../src/service.js';
import { tempDir } from './temp-dir.js';

/**
 * Starts the real service on a free loopback port and a fresh SQLite file (or what `overrides`
 * say, e.g. a MongoDB URI). The caller closes it (`after(() => service.close())`).
 */
export async function startTestService(overrides: Partial<Config> = {}, options: ServiceOptions = { collector: false }): Promise<Service> {
  const service = await startService(
    {
      dataDir: tempDir(),
      apiHost: '127.0.0.1',
      apiPort: 0,
      collectorHost: '127.0.0.1',
      collectorBinaryPort: 0,
      collectorJsonPort: 0,
      logLevel: 'silent',
      apiKey: undefined,
      readApiKey: undefined,
      ...overrides,
    },
    options,
  );
  return service;
}

export interface Answer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** fetch with JSON in and out. */
export async function call<T = any>(base: string, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer<T>> {
  const response = await fetch(base + path, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { ...(init.body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers },
    body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
  });
  const text = await response.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body, headers: response.headers };
}
