/**
 * The alarm system's domain: rules, alarms, their events, and the evaluation state kept per pack.
 * Plain data throughout (JSON-safe: no Infinity, no Map), so that both alarm stores keep it as it is
 * and a restart reads back exactly what was running (docs/alarms.md).
 */
import type { KindName } from '../records/kinds.js';

export const RULE_TYPES = ['threshold', 'no_data', 'rate_of_rise', 'cell_imbalance'] as const;
export type RuleType = (typeof RULE_TYPES)[number];

export const SEVERITIES = ['warning', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const ALARM_STATES = ['active', 'acknowledged', 'cleared'] as const;
export type AlarmState = (typeof ALARM_STATES)[number];

export const EVENT_TYPES = ['raised', 'escalated', 'deescalated', 'acknowledged', 'cleared'] as const;
export type AlarmEventType = (typeof EVENT_TYPES)[number];

/**
 * Why an alarm was cleared: its condition ended (a reading back inside the levels, or the next
 * reading after a silence), or its rule was changed, disabled or deleted while it was open.
 */
export const CLEAR_REASONS = ['condition', 'rule_changed', 'rule_disabled', 'rule_deleted'] as const;
export type ClearReason = (typeof CLEAR_REASONS)[number];

/** A level: the value is past it when above `above` or below `below` (either or both). */
export interface Band {
  above?: number;
  below?: number;
}

/** What a client sets on a rule (POST, PUT). */
export interface RuleSettings {
  name: string;
  type: RuleType;
  kind: KindName;
  /** The record field judged; null for no_data rules, which judge silence. */
  field: string | null;
  warning: Band | null;
  critical: Band | null;
  /** How far back past a level a value must come to leave it (no flapping on a value hovering at a level). */
  hysteresis: number;
  /** How long (record time) the condition must hold before the alarm is raised. */
  debounce_seconds: number;
  /** rate_of_rise only: the window the rise is measured over. */
  window_seconds: number | null;
  /** One pack, or null for every pack. */
  battery_id: string | null;
  enabled: boolean;
}

export interface AlarmRule extends RuleSettings {
  id: string;
  /** One of the default rules the service creates at first start (from the specs file and NO_DATA_SECONDS). */
  builtin: boolean;
  /** A default rule edited through the API: it no longer follows the specs file. */
  customized: boolean;
  created_at: number;
  updated_at: number;
}

/**
 * An alarm: one per raise of a rule for a pack; at most one open (active or acknowledged) per rule
 * and pack. Record times (`*_at` without `server`) are the readings' timestamps; a no-data alarm, an
 * acknowledgement and a clear by a rule change happen at server time.
 */
export interface Alarm {
  id: string;
  rule_id: string;
  /** The rule's name when the alarm was raised (the rule may be renamed or deleted later). */
  rule_name: string;
  type: RuleType;
  kind: KindName;
  field: string | null;
  battery_id: string;
  state: AlarmState;
  /** Now, or the last before it cleared. */
  severity: Severity;
  /** The highest it reached. */
  peak_severity: Severity;
  raised_at: number;
  raised_value: number;
  raised_server_at: number;
  /** The value at the latest change. */
  value: number;
  /** Server time of the latest change. */
  updated_at: number;
  acknowledged_by: string | null;
  acknowledged_note: string | null;
  acknowledged_at: number | null;
  cleared_at: number | null;
  cleared_value: number | null;
  cleared_server_at: number | null;
  clear_reason: ClearReason | null;
  /** Events so far; the newest is number event_count. */
  event_count: number;
}

/** One change of an alarm. Its id is fixed when it happens: written twice (a write repeated after an interruption), it is stored once. */
export interface AlarmEvent {
  id: string;
  alarm_id: string;
  /** 1, 2, … within the alarm. */
  seq: number;
  type: AlarmEventType;
  rule_id: string;
  battery_id: string;
  /** The alarm's severity after the change. */
  severity: Severity;
  previous_severity: Severity | null;
  value: number | null;
  /** Record time of the reading that made the change; server time for the others. */
  at: number;
  server_at: number;
  by: string | null;
  note: string | null;
  reason: ClearReason | null;
}

/** An alarm right after one of its changes: what listeners (live stream, webhooks) are told. */
export interface AlarmChange {
  event: AlarmEvent;
  alarm: Alarm;
}

/**
 * rate_of_rise: the readings of one slice of the window, summed. An object, not a tuple: FerretDB
 * stores no arrays in arrays.
 */
export interface RateSlice {
  /** Slice number: floor(t / slice width). */
  index: number;
  count: number;
  /** Sum of (t - slice start) over its readings: small numbers, no precision lost to epoch seconds. */
  offsets: number;
  values: number;
}

/** Evaluation state of one rule for one pack. */
export interface RuleState {
  /** Alarms raised so far for this rule and pack: the next one's id ends in seq + 1. */
  seq: number;
  /** Record time since which the condition holds while the debounce runs; null when it does not. */
  pending_since: number | null;
  /** rate_of_rise: the recent readings. */
  window: RateSlice[] | null;
  /** The open alarm, as it is now. */
  open: Alarm | null;
}

/** What the engine knows of one kind of a pack's records. */
export interface KindProgress {
  /** Timestamp of the newest record evaluated: an older one arriving later is a backfill. */
  newest: number;
  /** Server time the newest batch arrived: a no-data rule measures the silence from it. */
  received: number;
}

/** Everything the engine keeps for one pack, persisted as one unit. */
export interface PackState {
  battery_id: string;
  kinds: Partial<Record<KindName, KindProgress>>;
  rules: Record<string, RuleState>;
}

export const isOpen = (alarm: Pick<Alarm, 'state'>) => alarm.state !== 'cleared';

const RANK: Record<Severity, number> = { warning: 1, critical: 2 };
export const rankOf = (severity: Severity | null) => (severity === null ? 0 : RANK[severity]);
