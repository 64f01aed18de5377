/** Who may call the alarm API: writes need API_KEY when it is set, reads READ_API_KEY (or API_KEY) when that is set. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { build, call } from '../support/helper.js';

const API_KEY = 'alarm-write-key-0123';
const READ_API_KEY = 'alarm-read-key-0123';
const rule = { name: 'keyed', type: 'threshold', kind: 'battery-data', field: 'cell_temp', warning: { above: 50 } };

it('with API_KEY set, rule changes and acknowledgements need it; reads do not', async (t) => {
  const app = await build(t, { apiKey: API_KEY });
  assert.equal((await call(app, '/api/alarm-rules', { body: rule })).status, 401);
  assert.equal((await call(app, '/api/alarm-rules', { body: rule, headers: { 'x-api-key': 'wrong-key-0123' } })).status, 401);
  const created = await call(app, '/api/alarm-rules', { body: rule, headers: { 'x-api-key': API_KEY } });
  assert.equal(created.status, 201);
  const path = `/api/alarm-rules/${created.body.id}`;
  assert.equal((await call(app, path, { method: 'PUT', body: rule })).status, 401);
  assert.equal((await call(app, path, { method: 'DELETE' })).status, 401);
  assert.equal((await call(app, '/api/alarms/x~y~1/acknowledge', { body: { by: 'ann' } })).status, 401);
  assert.equal((await call(app, '/api/alarms/x~y~1/acknowledge', { body: { by: 'ann' }, headers: { authorization: `Bearer ${API_KEY}` } })).status, 404);
  assert.equal((await call(app, path)).status, 200);
  assert.equal((await call(app, '/api/alarms')).status, 200);
  assert.equal((await call(app, path, { method: 'DELETE', headers: { 'x-api-key': API_KEY } })).status, 204);
});

it('with READ_API_KEY set, reading rules and alarms needs a key', async (t) => {
  const app = await build(t, { apiKey: API_KEY, readApiKey: READ_API_KEY });
  for (const path of ['/api/alarm-rules', '/api/alarm-rules/temperature', '/api/alarms', '/api/alarms/x~y~1']) {
    assert.equal((await call(app, path)).status, 401, path);
  }
  assert.equal((await call(app, '/api/alarm-rules/temperature', { headers: { 'x-api-key': READ_API_KEY } })).status, 200);
  assert.equal((await call(app, '/api/alarms', { headers: { 'x-api-key': API_KEY } })).status, 200);
  // The read key does not write.
  assert.equal((await call(app, '/api/alarm-rules', { body: rule, headers: { 'x-api-key': READ_API_KEY } })).status, 401);
});
