/**
 * The service takes its settings from its caller, never from the environment or a .env file: the
 * CLI reads those, once. A developer's .env or exported variables do not reach the tests' services.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { EXAMPLES } from '../api/api-suite.js';
import { call } from '../support/helper.js';
import { startTestService } from '../support/service.js';
import { tempDir } from '../support/temp-dir.js';

it('reads neither the environment nor .env in the working directory', async (t) => {
  const dir = tempDir();
  writeFileSync(path.join(dir, '.env'), 'API_KEY=key-from-dotenv-file\nRETENTION_DAYS=-1\n');
  const cwd = process.cwd();
  process.chdir(dir);
  process.env.READ_API_KEY = 'key-from-the-environment';
  t.after(() => {
    process.chdir(cwd);
    delete process.env.READ_API_KEY;
  });
  const service = await startTestService();
  t.after(() => service.close());
  // Neither key is asked for: writes and reads are open, as the settings given say.
  assert.equal((await call(service.url, '/api/battery-data', { body: EXAMPLES['battery-data'] })).status, 200);
  assert.equal((await call(service.url, '/api/battery-data/latest')).status, 200);
  assert.equal(service.app.config.retentionDays, 30);
});
