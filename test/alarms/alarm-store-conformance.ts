/**
 * The AlarmStore contract, written once and run unchanged against each alarm store
 * (sqlite-alarm-store.test.ts, mongodb-alarm-store.test.ts). `open` gives a fresh, empty store and a
 * way to open it again on the same file or database.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AlarmStore, ChangeSet } from '../../src/alarms/alarm-store.js';
import type { Alarm, AlarmEvent, AlarmRule, PackState, Severity } from '../../src/alarms/model.js';
import { notificationsOf, type Notification, type Webhook } from '../../src/alarms/notifications.js';

export interface Opened {
  store: AlarmStore;
  /** The same store again, after `store.close()`. */
  reopen(): Promise<AlarmStore>;
}

const T = 1_732_700_000;

export function rule(id: string, overrides: Partial<AlarmRule> = {}): AlarmRule {
  return {
    id,
    name: `rule ${id}`,
    type: 'threshold',
    kind: 'battery-data',
    field: 'cell_temp',
    warning: { above: 45 },
    critical: { above: 60 },
    hysteresis: 1,
    debounce_seconds: 0,
    window_seconds: null,
    battery_id: null,
    enabled: true,
    builtin: false,
    customized: false,
    created_at: T,
    updated_at: T,
    ...overrides,
  };
}

export function alarm(ruleId: string, batteryId: string, seq: number, overrides: Partial<Alarm> = {}): Alarm {
  return {
    id: `${ruleId}~${batteryId}~${seq}`,
    rule_id: ruleId,
    rule_name: `rule ${ruleId}`,
    type: 'threshold',
    kind: 'battery-data',
    field: 'cell_temp',
    battery_id: batteryId,
    state: 'active',
    severity: 'warning',
    peak_severity: 'warning',
    raised_at: T,
    raised_value: 50,
    raised_server_at: T + 0.5,
    value: 50,
    updated_at: T + 0.5,
    acknowledged_by: null,
    acknowledged_note: null,
    acknowledged_at: null,
    cleared_at: null,
    cleared_value: null,
    cleared_server_at: null,
    clear_reason: null,
    event_count: 1,
    ...overrides,
  };
}

export function cleared(ruleId: string, batteryId: string, seq: number, clearedAt: number, overrides: Partial<Alarm> = {}): Alarm {
  const done: Partial<Alarm> = { state: 'cleared', cleared_at: clearedAt, cleared_value: 40, cleared_server_at: clearedAt + 0.5, clear_reason: 'condition', event_count: 2 };
  return alarm(ruleId, batteryId, seq, { ...done, ...overrides });
}

export function event(of: Alarm, seq: number, type: AlarmEvent['type'], severity: Severity = of.severity): AlarmEvent {
  return {
    id: `${of.id}~${seq}`,
    alarm_id: of.id,
    seq,
    type,
    rule_id: of.rule_id,
    battery_id: of.battery_id,
    severity,
    previous_severity: null,
    value: 50,
    at: of.raised_at + seq,
    server_at: of.raised_server_at + seq,
    by: null,
    note: null,
    reason: type === 'cleared' ? 'condition' : null,
  };
}

export function pack(batteryId: string, open: Alarm[] = [], newest = T): PackState {
  const rules: PackState['rules'] = {};
  for (const a of open) rules[a.rule_id] = { seq: Number(a.id.split('~').at(-1)), pending_since: null, window: null, open: a };
  return { battery_id: batteryId, kinds: { 'battery-data': { newest, received: newest + 1 } }, rules };
}

export function changeSet(parts: Partial<ChangeSet>): ChangeSet {
  return { rules: [], packs: [], alarms: [], events: [], writtenAt: T + 100, ...parts };
}

export function webhook(id: string, overrides: Partial<Webhook> = {}): Webhook {
  return { id, url: `http://127.0.0.1:9/${id}?token=t0ken`, secret: `secret of ${id} 0123456789`, enabled: true, source: 'api', created_at: T, ...overrides };
}

/** The outbox rows of an event for the given webhooks, as the engine builds them. */
export function outboxOf(of: Alarm, e: AlarmEvent, hooks: Webhook[], now = T + 100): Notification[] {
  return notificationsOf({ alarm: of, event: e }, hooks, undefined, 'http://dashboard.test', now);
}

export function alarmStoreConformance(name: string, open: () => Promise<Opened>): void {
  describe(`alarm store conformance: ${name}`, () => {
    async function withStore(body: (opened: Opened) => Promise<void>) {
      const opened = await open();
      try {
        await body(opened);
      } finally {
        await opened.store.close();
      }
    }

    it('loads nothing from a fresh store', () =>
      withStore(async ({ store }) => {
        assert.deepEqual(await store.load(), { rules: [], packs: [], seeded: [], webhooks: [], outbox: [] });
        assert.deepEqual(await store.alarms({ state: 'all', limit: 10 }), []);
        assert.equal(await store.alarm('nope'), null);
      }));

    it('keeps what a change set holds, across a reopen: rules, pack states with their open alarms, alarms, events, seeded defaults', async () => {
      const opened = await open();
      const open1 = alarm('r1', 'pack-1', 1, { event_count: 2, severity: 'critical', peak_severity: 'critical' });
      const state = pack('pack-1', [open1]);
      state.rules.r2 = { seq: 3, pending_since: T - 5, window: [{ index: 1, count: 2, offsets: 0.5, values: 70 }], open: null };
      await opened.store.apply(
        changeSet({
          rules: [{ put: rule('r1') }, { put: rule('r2', { created_at: T + 1 }) }],
          packs: [state],
          alarms: [open1],
          events: [event(open1, 1, 'raised', 'warning'), event(open1, 2, 'escalated', 'critical')],
          seeded: ['r1'],
        }),
      );
      await opened.store.close();
      const store = await opened.reopen();
      try {
        const loaded = await store.load();
        assert.deepEqual(loaded.rules, [rule('r1'), rule('r2', { created_at: T + 1 })]);
        assert.deepEqual(loaded.packs, [state]);
        assert.deepEqual(loaded.seeded, ['r1']);
        assert.equal(loaded.writtenAt, T + 100);
        assert.deepEqual(await store.alarm(open1.id), { ...open1, events: [event(open1, 1, 'raised', 'warning'), event(open1, 2, 'escalated', 'critical')] });
      } finally {
        await store.close();
      }
    });

    it('replaces and deletes rules in the order given; keeps seeded defaults when a change set does not name them', () =>
      withStore(async ({ store }) => {
        await store.apply(changeSet({ rules: [{ put: rule('a') }, { put: rule('b') }], seeded: ['a', 'b'] }));
        await store.apply(changeSet({ rules: [{ put: rule('a', { name: 'renamed' }) }, { delete: 'b' }, { put: rule('c') }], writtenAt: T + 200 }));
        const loaded = await store.load();
        assert.deepEqual(
          loaded.rules.map((r) => [r.id, r.name]),
          [
            ['a', 'renamed'],
            ['c', 'rule c'],
          ],
        );
        assert.deepEqual(loaded.seeded, ['a', 'b']);
        assert.equal(loaded.writtenAt, T + 200);
        // What another instance reloads when the rules' version moves: the same rules, alone.
        assert.deepEqual(await store.loadRules(), loaded.rules);
      }));

    it('stores an event once however often it is written, and an alarm as last written', () =>
      withStore(async ({ store }) => {
        const raised = alarm('r', 'p', 1);
        const done = cleared('r', 'p', 1, T + 30);
        await store.apply(changeSet({ packs: [pack('p', [raised])], alarms: [raised], events: [event(raised, 1, 'raised')] }));
        // The same event again (a write repeated after an interruption), and the alarm's next state.
        await store.apply(changeSet({ packs: [pack('p')], alarms: [done], events: [event(raised, 1, 'raised'), event(done, 2, 'cleared')] }));
        const stored = await store.alarm(raised.id);
        assert.equal(stored?.state, 'cleared');
        assert.deepEqual(
          stored?.events.map((e) => [e.seq, e.type]),
          [
            [1, 'raised'],
            [2, 'cleared'],
          ],
        );
        assert.deepEqual((await store.load()).packs, [pack('p')]);
      }));

    it('lists alarms newest raised first, by state, pack, severity, rule and since, limited', () =>
      withStore(async ({ store }) => {
        const alarms = [
          alarm('r1', 'p1', 1, { raised_at: T + 10 }),
          alarm('r1', 'p2', 1, { raised_at: T + 20, state: 'acknowledged', acknowledged_by: 'ann', acknowledged_at: T + 25, severity: 'critical' }),
          cleared('r2', 'p1', 1, T + 40, { raised_at: T + 30 }),
          cleared('r2', 'p1', 2, T + 60, { raised_at: T + 50, severity: 'critical' }),
        ];
        await store.apply(changeSet({ packs: [pack('p1', [alarms[0]!]), pack('p2', [alarms[1]!])], alarms }));
        const ids = async (query: Partial<Parameters<AlarmStore['alarms']>[0]>) => (await store.alarms({ state: 'all', limit: 100, ...query })).map((a) => a.id);
        assert.deepEqual(await ids({}), ['r2~p1~2', 'r2~p1~1', 'r1~p2~1', 'r1~p1~1']);
        assert.deepEqual(await ids({ state: 'open' }), ['r1~p2~1', 'r1~p1~1']);
        assert.deepEqual(await ids({ state: 'active' }), ['r1~p1~1']);
        assert.deepEqual(await ids({ state: 'acknowledged' }), ['r1~p2~1']);
        assert.deepEqual(await ids({ state: 'cleared' }), ['r2~p1~2', 'r2~p1~1']);
        assert.deepEqual(await ids({ batteryId: 'p1' }), ['r2~p1~2', 'r2~p1~1', 'r1~p1~1']);
        assert.deepEqual(await ids({ severity: 'critical' }), ['r2~p1~2', 'r1~p2~1']);
        assert.deepEqual(await ids({ ruleId: 'r2' }), ['r2~p1~2', 'r2~p1~1']);
        // Open at some moment since T + 45: the open ones, and the one cleared at T + 60.
        assert.deepEqual(await ids({ since: T + 45 }), ['r2~p1~2', 'r1~p2~1', 'r1~p1~1']);
        assert.deepEqual(await ids({ since: T + 40, state: 'cleared', batteryId: 'p1', severity: 'warning' }), ['r2~p1~1']);
        assert.deepEqual(await ids({ limit: 2 }), ['r2~p1~2', 'r2~p1~1']);
        assert.deepEqual(await ids({ batteryId: 'p3' }), []);
      }));

    it('removes alarms cleared before the cutoff, with their events, never an open one', () =>
      withStore(async ({ store }) => {
        const old = cleared('r', 'p', 1, T + 10, { raised_at: T - 1_000_000 });
        const recent = cleared('r', 'p', 2, T + 1000);
        // Raised long ago and still open: kept whatever its age.
        const openOld = alarm('s', 'p', 1, { raised_at: T - 2_000_000 });
        await store.apply(
          changeSet({
            packs: [pack('p', [openOld])],
            alarms: [old, recent, openOld],
            events: [event(old, 1, 'raised'), event(old, 2, 'cleared'), event(recent, 1, 'raised'), event(openOld, 1, 'raised')],
          }),
        );
        assert.equal(await store.deleteClosedBefore(T + 500), 1);
        assert.equal(await store.alarm(old.id), null);
        assert.equal((await store.alarm(recent.id))?.events.length, 1);
        assert.equal((await store.alarm(openOld.id))?.events.length, 1);
        assert.equal(await store.deleteClosedBefore(T + 500), 0);
        assert.deepEqual((await store.alarms({ state: 'all', limit: 10 })).map((a) => a.id).sort(), [openOld.id, recent.id].sort());
      }));

    it('keeps the outbox with its alarm changes: pending rows load after a reopen, delivery states stay, a row written twice is stored once', async () => {
      const opened = await open();
      const hooks = [webhook('w1'), webhook('w2', { created_at: T + 1 })];
      for (const hook of hooks) await opened.store.putWebhook(hook);
      const raised = alarm('r', 'p', 1);
      const done = cleared('r', 'p', 1, T + 30);
      const rows = [...outboxOf(raised, event(raised, 1, 'raised'), hooks), ...outboxOf(done, event(done, 2, 'cleared'), hooks, T + 101)];
      await opened.store.apply(changeSet({ packs: [pack('p')], alarms: [done], events: [event(raised, 1, 'raised'), event(done, 2, 'cleared')], outbox: rows }));
      const delivered: Notification = { ...rows[0]!, state: 'delivered', attempt_count: 1, attempts: [{ at: T + 102, status: 204, error: null, duration_ms: 3 }], delivered_at: T + 102 };
      await opened.store.updateNotification(delivered);
      // The same change set again (a write repeated after an interruption): the delivered row stays delivered.
      await opened.store.apply(changeSet({ packs: [pack('p')], alarms: [done], events: [event(done, 2, 'cleared')], outbox: rows }));
      await opened.store.close();
      const store = await opened.reopen();
      try {
        const loaded = await store.load();
        assert.deepEqual(loaded.webhooks, hooks);
        assert.deepEqual(loaded.outbox, rows.slice(1));
        assert.deepEqual(await store.deliveries('w1', 10), [rows[2], delivered]);
        assert.deepEqual(await store.deliveries('w1', 1), [rows[2]]);
        await store.deleteWebhook('w2');
        assert.deepEqual((await store.load()).webhooks, [hooks[0]]);
        assert.deepEqual(await store.deliveries('w2', 10), []);
        // Retention: finished rows older than the cutoff go, pending ones stay.
        await store.deleteClosedBefore(T + 1000);
        assert.deepEqual(await store.deliveries('w1', 10), [rows[2]]);
      } finally {
        await store.close();
      }
    });
  });
}
