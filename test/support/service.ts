import { startService, type Service, type ServiceOptions } from '../../src/server.js';
import type { Config } from '../../src/config.js';
import { testConfig } from './helper.js';

/**
 * Starts the whole service on a socket (free loopback ports, a fresh SQLite file, or what `overrides`
 * say, e.g. a MongoDB URI), for the tests where sockets are the point: the collector, the browser,
 * schemathesis. The caller closes it (`after(() => service.close())`). API tests use build(t) (helper.ts).
 */
export function startTestService(overrides: Partial<Config> = {}, options: ServiceOptions = { collector: false }): Promise<Service> {
  return startService(testConfig(overrides), options);
}
