/**
 * Several instances: a reload of the webhooks another instance changed never lands over a create or
 * delete made here while it read the store (src/cluster/serial.ts). Real SQLite alarm store; the
 * reload's read is held open until the local delete has been asked for.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openSqliteAlarmStore } from '../../src/alarms/sqlite-alarm-store.js';
import { WebhookDispatcher } from '../../src/alarms/webhook-dispatcher.js';
import { createCollectorMetrics } from '../../src/collector/metrics.js';
import { tempDir } from '../support/temp-dir.js';

describe('webhooks reloaded from the store', () => {
  it('a reload whose read began before a local delete does not bring the deleted webhook back', async () => {
    const store = openSqliteAlarmStore(tempDir());
    const webhooks = new WebhookDispatcher({ store, metrics: createCollectorMetrics(), baseUrl: () => 'http://127.0.0.1:8000' });
    try {
      const loaded = await store.load();
      webhooks.loaded(loaded.webhooks, loaded.outbox);
      const created = await webhooks.create('w-race', { url: 'http://127.0.0.1:9/hook', enabled: false });

      // The other instance's change: the reload reads the store (the webhook is there), then waits.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let read = false;
      const reloading = webhooks.reload(async () => {
        const stored = await store.loadWebhooks();
        read = true;
        await held;
        return stored;
      });
      while (!read) await new Promise((resolve) => setTimeout(resolve, 5));
      // The delete asked for here meanwhile.
      const deleting = webhooks.delete(created.id);
      await new Promise((resolve) => setTimeout(resolve, 50));
      release();
      await reloading;
      assert.equal(await deleting, true);

      assert.deepEqual((await webhooks.list()).map((w) => w.id), []);
      assert.equal(await webhooks.delete(created.id), false);
      assert.deepEqual(await store.loadWebhooks(), []);
    } finally {
      await webhooks.close();
      await store.close();
    }
  });
});
