/**
 * The AlarmStore interface: where rules, alarms, their events and the evaluation state live.
 * sqlite-alarm-store.ts (a file of its own beside the records) and mongodb-alarm-store.ts (collections
 * beside the records) implement it; one conformance suite (test/alarms/alarm-store-conformance.ts)
 * runs against both.
 *
 * The engine writes through `apply`, one change set at a time, in order. A change set is all or
 * nothing for each pack: a pack's state (the checkpoint a restart continues from) is never stored
 * without the alarms and events that brought it there, nor they without it. On SQLite that is one
 * transaction; on MongoDB, without multi-document transactions, the pack's document carries its
 * changes until they are in their collections (see mongodb-alarm-store.ts).
 */
import type { Alarm, AlarmEvent, AlarmRule, PackState, Severity } from './model.js';
import type { Notification, Webhook } from './notifications.js';

export type AlarmStateFilter = 'active' | 'acknowledged' | 'cleared' | 'open' | 'all';

export interface AlarmQuery {
  state: AlarmStateFilter;
  batteryId?: string;
  severity?: Severity;
  ruleId?: string;
  /** Unix seconds: alarms still open, or cleared at or after it. */
  since?: number;
  limit: number;
}

export type RuleChange = { put: AlarmRule } | { delete: string };

export interface ChangeSet {
  /** Rules created, replaced or deleted, in order. Stored before the packs' changes. */
  rules: RuleChange[];
  /** Whole pack states as they are now. Every pack that alarms or events below belong to is here. */
  packs: PackState[];
  /** Alarms as they are after these changes (one entry per alarm). */
  alarms: Alarm[];
  /** Alarm events, in the order they happened. Ids are stable: storing one twice stores it once. */
  events: AlarmEvent[];
  /**
   * Webhook notifications of these events (the outbox), stored with them: on SQLite in the same
   * transaction, on MongoDB in the pack's document with its alarms and events. Ids are stable: a row
   * stored twice is stored once, and one already there keeps its delivery state.
   */
  outbox?: Notification[];
  /** Ids of the default rules created so far, when it changed: a deleted default is not created again. */
  seeded?: string[];
  /** Server time of this write: where a restart looks back from for packs it holds no state of. */
  writtenAt: number;
}

export interface LoadedState {
  rules: AlarmRule[];
  packs: PackState[];
  seeded: string[];
  /** Server time of the last change set stored; undefined on a store never written to. */
  writtenAt?: number;
  webhooks: Webhook[];
  /** Notifications not delivered yet (and not given up on), oldest first. */
  outbox: Notification[];
}

export type AlarmWithEvents = Alarm & { events: AlarmEvent[] };

export interface AlarmStore {
  readonly name: 'sqlite' | 'mongodb';
  /** Everything the engine starts from. Finishes what an interrupted `apply` left half done first. */
  load(): Promise<LoadedState>;
  /**
   * One pack's state as stored, finishing what an interrupted `apply` left half done for it; undefined
   * when none is stored. An instance taking the pack over from another (cluster/pack-ownership.ts) starts from it.
   */
  loadPack(batteryId: string): Promise<PackState | undefined>;
  /** The rules as stored, oldest first: an instance reloads them when another changed them (cluster/cluster-sync.ts). */
  loadRules(): Promise<AlarmRule[]>;
  /** The webhooks alone, as `load` answers them (what another instance reloads when they changed). */
  loadWebhooks(): Promise<Webhook[]>;
  apply(changes: ChangeSet): Promise<void>;
  /** Newest raised first. */
  alarms(query: AlarmQuery): Promise<Alarm[]>;
  /** An alarm with its events, oldest first; null when there is none with that id. */
  alarm(id: string): Promise<AlarmWithEvents | null>;
  /**
   * Removes cleared alarms (and their events) cleared before `cutoff` (Unix seconds); never an open one.
   * Answers how many. Notifications delivered or given up on before it go too; a pending one never.
   */
  deleteClosedBefore(cutoff: number): Promise<number>;
  putWebhook(webhook: Webhook): Promise<void>;
  /** Deletes a webhook and its notifications. */
  deleteWebhook(id: string): Promise<void>;
  /** A notification's delivery state after an attempt (its body never changes). Nothing when it is gone (its webhook deleted). */
  updateNotification(notification: Notification): Promise<void>;
  /** A webhook's notifications, newest first. */
  deliveries(webhookId: string, limit: number): Promise<Notification[]>;
  close(): Promise<void>;
}
