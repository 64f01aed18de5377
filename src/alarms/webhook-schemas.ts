/**
 * The webhook API's schemas (TypeBox): the body of POST /api/webhooks, a webhook as shown (never its
 * secret, its URL by origin only), and a notification with its delivery attempts.
 */
import { Ajv } from 'ajv';
import { Type } from 'typebox';
import { toDetail, type ValidationDetail } from '../records/validate.js';
import { EVENT_TYPES } from './model.js';
import { NOTIFICATION_STATES } from './notifications.js';

export const MAX_URL_LENGTH = 2048;
export const MIN_SECRET_LENGTH = 16;
export const MAX_SECRET_LENGTH = 256;
export const MAX_DELIVERIES_LIMIT = 1000;

/**
 * An http(s) URL every parser takes: a host name (labels starting with a letter) or an IPv4 address, an optional port up to 65535, then any
 * printable ASCII. IPv6 literals are left out for the same reason.
 */
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
// No two hyphens in a row: an `xn--` label is punycode, which a pattern cannot judge.
const LABEL = '[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*';
const PORT = '(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?';
export const WEBHOOK_URL_PATTERN = `^https?://(?:${OCTET}(?:\\.${OCTET}){3}|${LABEL}(?:\\.${LABEL})*)${PORT}(?:[/?#][\\x21-\\x7E]*)?$`;

export const WebhookInput = Type.Object(
  {
    url: Type.String({
      pattern: WEBHOOK_URL_PATTERN,
      maxLength: MAX_URL_LENGTH,
      description: 'Where each alarm change is POSTed (http:// or https://; redirects are not followed)',
      example: 'https://hooks.example.com/battery-alarms',
    }),
    secret: Type.Optional(
      Type.String({
        minLength: MIN_SECRET_LENGTH,
        maxLength: MAX_SECRET_LENGTH,
        description: 'HMAC-SHA256 key of the X-Signature-256 header; generated when not given. Shown in this answer only.',
      }),
    ),
    enabled: Type.Optional(Type.Boolean({ default: true, description: 'A disabled webhook gets no notifications' })),
  },
  { $id: 'WebhookInput', title: 'WebhookInput', additionalProperties: false },
);

const webhookProperties = {
  id: Type.String({ description: 'Given by the server' }),
  url: Type.String({ description: 'The receiver, by origin only (its path and query may hold a token)', example: 'https://hooks.example.com/…' }),
  enabled: Type.Boolean(),
  source: Type.Enum(['api', 'config'], { description: 'api: added here; config: from WEBHOOK_URLS (removed there, not here)' }),
  created_at: Type.Number({ description: 'Unix seconds' }),
};

export const WebhookSchema = Type.Object(webhookProperties, { $id: 'Webhook', title: 'Webhook' });

export const CreatedWebhookSchema = Type.Object(
  { ...webhookProperties, secret: Type.String({ description: 'The signing secret: shown now and never again' }) },
  { $id: 'CreatedWebhook', title: 'CreatedWebhook' },
);

export const DeliveryAttemptSchema = Type.Object(
  {
    at: Type.Number({ description: 'Server time, Unix seconds' }),
    status: Type.Union([Type.Integer(), Type.Null()], { description: "The receiver's HTTP status; null without an answer" }),
    error: Type.Union([Type.String(), Type.Null()], { description: 'Why it did not count as delivered; null when it did' }),
    duration_ms: Type.Number(),
  },
  { $id: 'DeliveryAttempt', title: 'DeliveryAttempt' },
);

export const DeliverySchema = Type.Object(
  {
    id: Type.String(),
    webhook_id: Type.String(),
    event_id: Type.String({ description: 'The alarm event: what receivers drop duplicates by' }),
    alarm_id: Type.String(),
    battery_id: Type.String(),
    seq: Type.Integer({ description: "The event's number within its alarm" }),
    type: Type.Enum(EVENT_TYPES),
    created_at: Type.Number({ description: 'When the change was stored, Unix seconds' }),
    state: Type.Enum(NOTIFICATION_STATES, { description: 'pending (on its way or waiting to retry), delivered, or failed (retried for 24 h)' }),
    attempt_count: Type.Integer(),
    attempts: Type.Array(DeliveryAttemptSchema, { description: 'The latest 20 attempts, oldest first' }),
    next_at: Type.Number({ description: 'When it is tried next, while pending' }),
    delivered_at: Type.Union([Type.Number(), Type.Null()]),
  },
  { $id: 'Delivery', title: 'Delivery' },
);

const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false, useDefaults: false, removeAdditional: false });
const webhookValidator = ajv.compile(WebhookInput);

export type WebhookParse = { ok: true; url: string; secret?: string; enabled?: boolean } | { ok: false; detail: ValidationDetail[] };

export function parseWebhookInput(body: unknown): WebhookParse {
  if (webhookValidator(body)) {
    const { url, secret, enabled } = body as { url: string; secret?: string; enabled?: boolean };
    try {
      new URL(url);
    } catch {
      return { ok: false, detail: [{ loc: ['body', 'url'], msg: 'not a URL', type: 'value_error.url' }] };
    }
    return { ok: true, url, ...(secret === undefined ? {} : { secret }), ...(enabled === undefined ? {} : { enabled }) };
  }
  if (body === undefined || body === null) return { ok: false, detail: [{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }] };
  return { ok: false, detail: toDetail(webhookValidator.errors ?? [], ['body']) };
}
