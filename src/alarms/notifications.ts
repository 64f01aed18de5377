/**
 * Webhook notifications of alarm changes (docs/alarms.md): the webhooks, the outbox's rows, the JSON
 * payload and its signature. A notification's body is fixed when the alarm change is stored, in the
 * same write, so that a retry (after a receiver's outage, after a kill -9) sends the very same bytes
 * and the same event id: receivers drop duplicates by it.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Alarm, AlarmChange, AlarmEventType, AlarmRule, Band } from './model.js';

export type WebhookSource = 'api' | 'config';

export interface Webhook {
  id: string;
  url: string;
  /** HMAC-SHA256 key of the X-Signature-256 header. Shown once, when the webhook is created through the API. */
  secret: string;
  enabled: boolean;
  /** Created through /api/webhooks, or from WEBHOOK_URLS (kept in step with it at every start). */
  source: WebhookSource;
  created_at: number;
}

export const NOTIFICATION_STATES = ['pending', 'delivered', 'failed'] as const;
export type NotificationState = (typeof NOTIFICATION_STATES)[number];

/** One try at a receiver. */
export interface DeliveryAttempt {
  /** Server time, Unix seconds. */
  at: number;
  /** The receiver's HTTP status; null when there was no answer (refused, timed out). */
  status: number | null;
  /** Why it did not count as delivered; null when it did. */
  error: string | null;
  duration_ms: number;
}

/** A row of the outbox: one alarm change for one webhook. */
export interface Notification {
  /** `<webhook id>~<event id>`: written twice, stored once. */
  id: string;
  webhook_id: string;
  /** The alarm event's id: what receivers drop duplicates by (the same for every webhook). */
  event_id: string;
  alarm_id: string;
  battery_id: string;
  /** The event's number within its alarm: deliveries of one alarm go in this order. */
  seq: number;
  type: AlarmEventType;
  /** Server time the change was stored (the retries' 24 h run from it). */
  created_at: number;
  /** The JSON body, exactly as sent. */
  body: string;
  state: NotificationState;
  attempt_count: number;
  /** The latest attempts, oldest first (at most MAX_ATTEMPTS_KEPT). */
  attempts: DeliveryAttempt[];
  /** Server time of the next attempt while pending. */
  next_at: number;
  delivered_at: number | null;
}

export const MAX_ATTEMPTS_KEPT = 20;
export const SIGNATURE_HEADER = 'x-signature-256';
export const EVENT_ID_HEADER = 'x-event-id';
export const EVENT_TYPE_HEADER = 'x-event-type';

/** `sha256=<hex>` of the body with the secret: GitHub's X-Hub-Signature-256 format. */
export function signature(secret: string, body: string | Uint8Array): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Checks a signature header against a body in constant time (what a receiver does; the tests use it). */
export function verifySignature(secret: string, body: string | Uint8Array, header: string | null | undefined): boolean {
  if (typeof header !== 'string') return false;
  const expected = Buffer.from(signature(secret, body));
  const given = Buffer.from(header);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export const newSecret = () => randomBytes(32).toString('base64url');

/**
 * A receiver's URL as it may be logged or shown: its origin only. Paths and query strings carry
 * tokens (Slack's, Teams', a bearer in `?token=`), and so may credentials before the host.
 */
export function loggableUrl(url: string): string {
  try {
    const parsed = new URL(url);
    const rest = parsed.pathname !== '/' || parsed.search !== '' ? '/…' : '';
    return `${parsed.origin}${rest}`;
  } catch {
    return '(not a URL)';
  }
}

/** What a receiver gets: the alarm after the change, the change, the pack with a link to its page, and what triggered it. */
export interface NotificationPayload {
  event_id: string;
  type: `alarm.${AlarmEventType}`;
  /** Server time of the change, Unix seconds. */
  occurred_at: number;
  alarm: Alarm;
  event: AlarmChange['event'];
  pack: { battery_id: string; url: string };
  trigger: {
    kind: Alarm['kind'];
    field: string | null;
    rule_type: Alarm['type'];
    /** The value judged (for no_data, the seconds of silence; for rate_of_rise, the rise per minute). */
    value: number | null;
    /** Record time of the reading; server time for a no-data alarm, an acknowledgement or a clear by a rule change. */
    at: number;
    /** The rule's levels when the change was stored; null when the rule is gone. */
    warning: Band | null;
    critical: Band | null;
    hysteresis: number | null;
  };
}

/** The dashboard's page of a pack (web/src/hooks.ts parses `#/pack/<id>`). */
export function packUrl(baseUrl: string, batteryId: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/#/pack/${encodeURIComponent(batteryId)}`;
}

export function payloadOf(change: AlarmChange, rule: AlarmRule | undefined, baseUrl: string): NotificationPayload {
  const { event, alarm } = change;
  return {
    event_id: event.id,
    type: `alarm.${event.type}`,
    occurred_at: event.server_at,
    alarm,
    event,
    pack: { battery_id: alarm.battery_id, url: packUrl(baseUrl, alarm.battery_id) },
    trigger: {
      kind: alarm.kind,
      field: alarm.field,
      rule_type: alarm.type,
      value: event.value,
      at: event.at,
      warning: rule?.warning ?? null,
      critical: rule?.critical ?? null,
      hysteresis: rule?.hysteresis ?? null,
    },
  };
}

/** The outbox rows of one change: one per enabled webhook. */
export function notificationsOf(change: AlarmChange, webhooks: Iterable<Webhook>, rule: AlarmRule | undefined, baseUrl: string, now: number): Notification[] {
  let body: string | undefined;
  const rows: Notification[] = [];
  for (const webhook of webhooks) {
    if (!webhook.enabled) continue;
    body ??= JSON.stringify(payloadOf(change, rule, baseUrl));
    rows.push({
      id: `${webhook.id}~${change.event.id}`,
      webhook_id: webhook.id,
      event_id: change.event.id,
      alarm_id: change.alarm.id,
      battery_id: change.alarm.battery_id,
      seq: change.event.seq,
      type: change.event.type,
      created_at: now,
      body,
      state: 'pending',
      attempt_count: 0,
      attempts: [],
      next_at: now,
      delivered_at: null,
    });
  }
  return rows;
}
