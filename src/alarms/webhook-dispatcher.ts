/**
 * Webhooks and the delivery of the outbox (docs/alarms.md).
 *
 * - The engine asks `outboxFor` for the notifications of each change set and stores them with it (one
 *   transaction on SQLite, the pack's document on MongoDB); once stored it hands them over (`stored`).
 *   At start the engine's load hands over those still pending (`loaded`): what a kill -9 left is sent
 *   then. So a notification is sent at least once; receivers drop duplicates by its event id.
 * - Per webhook and alarm, one at a time, in the order of the alarm's events: a notification waits
 *   until the one before it is delivered or given up on. Different alarms and webhooks go side by side,
 *   at most `concurrency` requests at once, at most PER_RECEIVER_CONCURRENCY of them to one webhook.
 * - A receiver that fails is backed off as a whole (see Receiver): one request per backoff, however
 *   many alarms wait for it.
 * - A failed attempt (no answer within the timeout, a refused connection, any status but 2xx, a
 *   redirect: never followed) is retried with exponential backoff, up to 24 h after the change; then the
 *   notification is marked failed. Each attempt and its answer is stored on the notification.
 * - Deliveries run on the event loop beside evaluation and never hold it: the engine only queues.
 *
 * Secrets never reach a log, an error or an answer after creation: a URL is logged by its origin only.
 */
import { createHash } from 'node:crypto';
import { Agent, fetch, type Response } from 'undici';
import { Serial } from '../cluster/serial.js';
import type { CollectorMetrics } from '../collector/metrics.js';
import { withDeadline } from '../store/deadline.js';
import { StoreUnavailableError } from '../store/store.js';
import type { AlarmStore } from './alarm-store.js';
import type { AlarmChange, AlarmRule } from './model.js';
import { receiverLookup } from './receiver-lookup.js';
import {
  EVENT_ID_HEADER,
  EVENT_TYPE_HEADER,
  loggableUrl,
  MAX_ATTEMPTS_KEPT,
  newSecret,
  notificationsOf,
  SIGNATURE_HEADER,
  signature,
  type DeliveryAttempt,
  type Notification,
  type Webhook,
} from './notifications.js';

export const DEFAULT_RETRY = { minMs: 1000, maxMs: 3_600_000, giveUpMs: 24 * 3_600_000 };
export const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_CONCURRENCY = 32;
/** Requests to one webhook at once: a slow receiver holds at most a quarter of them. */
export const PER_RECEIVER_CONCURRENCY = 8;
/**
 * Webhooks at most, WEBHOOK_URLS included. Each adds a notification (an outbox row holding its body)
 * to every alarm change, written in the change's transaction: a fleet-wide event of 1,000 alarms with
 * 71 webhooks made 84,000 rows in one write, which held the event loop for 5.5 s (a fuzzing run).
 * 20 is GitHub's cap of webhooks per event on one repository; receivers that need more fan out
 * themselves (one alerting system).
 */
export const MAX_WEBHOOKS = 20;
/** How long an API call waits for the alarm state to load before answering 503. */
const LOAD_WAIT_MS = 10_000;
/** A receiver's answer read at most this far (then dropped): a slow or huge body must not hold a place. */
const MAX_ANSWER_BYTES = 64 * 1024;

export interface DispatcherLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RetryOptions {
  /** The first retry's delay; each one after doubles, up to maxMs (with jitter: half to all of it). */
  minMs: number;
  maxMs: number;
  /** Past this long after the change, a notification that still failed is marked failed. */
  giveUpMs: number;
}

export interface WebhookDispatcherOptions {
  store: Pick<AlarmStore, 'putWebhook' | 'deleteWebhook' | 'updateNotification' | 'deliveries'>;
  metrics: Pick<CollectorMetrics, 'notifications'>;
  logger?: DispatcherLogger;
  /** WEBHOOK_URLS. */
  configUrls?: readonly string[];
  /** The secret of the WEBHOOK_URLS webhooks (WEBHOOK_SECRET); unset, each gets a generated one (and a warning). */
  configSecret?: string;
  /** Where the dashboard is served (the packs' links in the payload). */
  baseUrl: () => string;
  retry?: Partial<RetryOptions>;
  /** How long a receiver has to answer. */
  timeoutMs?: number;
  concurrency?: number;
  /** Server clock, Unix seconds (tests). */
  clock?: () => number;
  /** Several instances: a webhook was added or deleted here (stored already); the others reload theirs (reload). */
  changed?: () => unknown;
}

/** What the API shows of a webhook: never its secret, its URL by origin only. */
export interface WebhookView {
  id: string;
  url: string;
  enabled: boolean;
  source: Webhook['source'];
  created_at: number;
}

export const viewOf = (webhook: Webhook): WebhookView => ({
  id: webhook.id,
  url: loggableUrl(webhook.url),
  enabled: webhook.enabled,
  source: webhook.source,
  created_at: webhook.created_at,
});

/** Refused: too many webhooks already, or one that WEBHOOK_URLS sets. */
export class WebhookRefusedError extends Error {
  override name = 'WebhookRefusedError';
}

/** A WEBHOOK_URLS entry's id: the same URL keeps its id (and its deliveries) across restarts. */
export const configWebhookId = (url: string) => `config-${createHash('sha256').update(url).digest('hex').slice(0, 16)}`;

const keyOf = (n: Pick<Notification, 'webhook_id' | 'alarm_id'>) => `${n.webhook_id}\u0000${n.alarm_id}`;

/**
 * A webhook's receiver, as deliveries see it. After a failed attempt the receiver waits out a backoff of
 * its own (the notifications' schedule: 1 s, 2 s, 4 s… up to 1 h), then gets one notification at a time
 * until one is taken. A receiver that is down costs one request per backoff, not one per waiting alarm:
 * without this, a fleet-wide event of about 600 alarms sent to dead hosts made 50,000 attempts in 7
 * minutes, each a write of its state (a fuzzing run). Once it takes one, everything waiting for it goes.
 */
interface Receiver {
  /** Backoffs in a row (failures while one is running add none); 0 once a notification was taken. */
  failures: number;
  /** While failing: when it may be tried again, server time. */
  retryAt: number;
  /** Its requests in flight. */
  inFlight: number;
}

export class WebhookDispatcher {
  readonly #store: WebhookDispatcherOptions['store'];
  readonly #metrics: WebhookDispatcherOptions['metrics'];
  readonly #log: DispatcherLogger | undefined;
  readonly #configUrls: readonly string[];
  readonly #configSecret: string | undefined;
  readonly #baseUrl: () => string;
  readonly #retry: RetryOptions;
  readonly #timeoutMs: number;
  readonly #concurrency: number;
  readonly #clock: () => number;

  readonly #webhooks = new Map<string, Webhook>();
  /** Creates, deletes and reloads, one at a time (cluster/serial.ts). */
  readonly #edits = new Serial();
  readonly #changed: (() => unknown) | undefined;
  /** Pending notifications per webhook, then per alarm in the alarm's order: only an alarm's first is ever in flight. */
  readonly #queues = new Map<string, Map<string, Notification[]>>();
  /** The alarm queues (keyOf) with a request in flight. */
  readonly #inFlight = new Set<string>();
  readonly #receivers = new Map<string, Receiver>();
  #storeFailing = false;
  #wakeTimer: NodeJS.Timeout | undefined;
  #wakeAt = Infinity;
  #closed = false;
  readonly #abort = new AbortController();
  /** Connections to receivers; their names looked up off most of libuv's pool (receiver-lookup.ts). */
  readonly #agent = new Agent({ connect: { lookup: receiverLookup() } });
  readonly #running = new Set<Promise<void>>();
  #resolveLoaded!: () => void;
  readonly #loaded = new Promise<void>((resolve) => (this.#resolveLoaded = resolve));

  constructor(options: WebhookDispatcherOptions) {
    this.#store = options.store;
    this.#metrics = options.metrics;
    this.#log = options.logger;
    this.#configUrls = options.configUrls ?? [];
    this.#configSecret = options.configSecret;
    this.#baseUrl = options.baseUrl;
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    this.#clock = options.clock ?? (() => Date.now() / 1000);
    this.#changed = options.changed;
  }

  // ---- the engine's side -----------------------------------------------------------------

  /** The webhooks and pending notifications as stored; WEBHOOK_URLS brought in step. Called once, as the engine loads. */
  loaded(webhooks: readonly Webhook[], outbox: readonly Notification[]): void {
    for (const webhook of webhooks) this.#webhooks.set(webhook.id, webhook);
    this.#syncConfigWebhooks();
    for (const row of outbox) if (this.#webhooks.has(row.webhook_id)) this.#enqueue(row);
    for (const alarms of this.#queues.values()) for (const queue of alarms.values()) queue.sort((a, b) => a.seq - b.seq);
    this.#resolveLoaded();
    if (outbox.length > 0) this.#log?.info({ notifications: outbox.length }, 'webhooks: delivering notifications stored before the start');
    this.#pump();
  }

  /**
   * Several instances: the webhooks added or deleted through the API of another instance, as `load`
   * reads them from the store, never beside a create or delete here. Each instance keeps its own
   * WEBHOOK_URLS entries (kept in step at its start); a deleted webhook's notifications not yet
   * delivered are dropped, as a delete here drops them.
   */
  reload(load: () => Promise<readonly Webhook[]>): Promise<void> {
    return this.#edits.run(async () => this.#takeStored(await load()));
  }

  #takeStored(stored: readonly Webhook[]): void {
    const fromApi = new Map(stored.filter((webhook) => webhook.source === 'api').map((webhook) => [webhook.id, webhook]));
    for (const [id, webhook] of [...this.#webhooks]) {
      if (webhook.source !== 'api' || fromApi.has(id)) continue;
      this.#forget(id);
    }
    for (const [id, webhook] of fromApi) this.#webhooks.set(id, webhook);
  }

  /** The outbox rows of a change set: one per change and enabled webhook. */
  outboxFor(changes: readonly AlarmChange[], ruleOf: (id: string) => AlarmRule | undefined, now: number): Notification[] {
    if (this.#webhooks.size === 0 || changes.length === 0) return [];
    const baseUrl = this.#baseUrl();
    return changes.flatMap((change) => notificationsOf(change, this.#webhooks.values(), ruleOf(change.alarm.rule_id), baseUrl, now));
  }

  /** Rows now stored with their alarm changes: on their way. */
  stored(outbox: readonly Notification[]): void {
    if (this.#closed || outbox.length === 0) return;
    for (const row of outbox) if (this.#webhooks.has(row.webhook_id)) this.#enqueue(row);
    this.#pump();
  }

  #syncConfigWebhooks(): void {
    const now = this.#clock();
    const wanted = new Set(this.#configUrls.map(configWebhookId));
    for (const webhook of [...this.#webhooks.values()]) {
      if (webhook.source !== 'config' || wanted.has(webhook.id)) continue;
      this.#webhooks.delete(webhook.id);
      this.#persist(this.#store.deleteWebhook(webhook.id), webhook, 'webhooks: a webhook no longer in WEBHOOK_URLS could not be removed');
    }
    if (this.#configUrls.length > 0 && this.#configSecret === undefined) {
      this.#log?.warn(
        {},
        'webhooks: WEBHOOK_URLS without WEBHOOK_SECRET: their notifications are signed with a generated secret no receiver knows; set WEBHOOK_SECRET',
      );
    }
    for (const url of this.#configUrls) {
      const id = configWebhookId(url);
      const existing = this.#webhooks.get(id);
      const secret = this.#configSecret ?? existing?.secret ?? newSecret();
      if (existing !== undefined && existing.secret === secret && existing.enabled) continue;
      const webhook: Webhook = { id, url, secret, enabled: true, source: 'config', created_at: existing?.created_at ?? now };
      this.#webhooks.set(id, webhook);
      this.#persist(this.#store.putWebhook(webhook), webhook, 'webhooks: a WEBHOOK_URLS webhook could not be stored; it is used anyway');
    }
  }

  #persist(write: Promise<void>, webhook: Webhook, message: string): void {
    write.catch((error: unknown) => this.#log?.warn({ err: (error as Error).message, webhook_id: webhook.id, url: loggableUrl(webhook.url) }, message));
  }

  // ---- the API's side --------------------------------------------------------------------

  async list(): Promise<WebhookView[]> {
    await this.#whenLoaded();
    return [...this.#webhooks.values()].sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1)).map(viewOf);
  }

  async get(id: string): Promise<WebhookView | undefined> {
    await this.#whenLoaded();
    const webhook = this.#webhooks.get(id);
    return webhook === undefined ? undefined : viewOf(webhook);
  }

  /** Stores a webhook; it gets the changes stored from then on. Answers it with its secret (the only time it is shown). */
  async create(id: string, input: { url: string; secret?: string | undefined; enabled?: boolean | undefined }): Promise<WebhookView & { secret: string }> {
    await this.#whenLoaded();
    return this.#edits.run(() => this.#create(id, input));
  }

  async #create(id: string, input: { url: string; secret?: string | undefined; enabled?: boolean | undefined }): Promise<WebhookView & { secret: string }> {
    if (this.#webhooks.size >= MAX_WEBHOOKS) throw new WebhookRefusedError(`There are ${MAX_WEBHOOKS} webhooks already: delete one first`);
    const webhook: Webhook = { id, url: input.url, secret: input.secret ?? newSecret(), enabled: input.enabled ?? true, source: 'api', created_at: this.#clock() };
    await this.#store.putWebhook(webhook);
    this.#webhooks.set(id, webhook);
    this.#changed?.();
    this.#log?.info({ webhook_id: id, url: loggableUrl(webhook.url) }, 'webhooks: webhook added');
    return { ...viewOf(webhook), secret: webhook.secret };
  }

  /** Deletes a webhook and its deliveries; false when there is none with that id. */
  async delete(id: string): Promise<boolean> {
    await this.#whenLoaded();
    return this.#edits.run(() => this.#delete(id));
  }

  async #delete(id: string): Promise<boolean> {
    const webhook = this.#webhooks.get(id);
    if (webhook === undefined) return false;
    if (webhook.source === 'config') throw new WebhookRefusedError(`Webhook ${id} is set by WEBHOOK_URLS: remove it there`);
    this.#forget(id);
    await this.#store.deleteWebhook(id);
    this.#changed?.();
    this.#log?.info({ webhook_id: id, url: loggableUrl(webhook.url) }, 'webhooks: webhook deleted');
    return true;
  }

  /** A webhook's notifications with their attempts, newest first; undefined when there is no such webhook. */
  async deliveries(id: string, limit: number): Promise<Notification[] | undefined> {
    await this.#whenLoaded();
    if (!this.#webhooks.has(id)) return undefined;
    return this.#store.deliveries(id, limit);
  }

  async #whenLoaded(): Promise<void> {
    if (this.#closed) throw new StoreUnavailableError('The webhooks are closed');
    await withDeadline(this.#loaded, LOAD_WAIT_MS, () => new StoreUnavailableError('The alarm store is not reachable yet; try again shortly'));
  }

  // ---- delivery --------------------------------------------------------------------------

  #enqueue(row: Notification): void {
    let alarms = this.#queues.get(row.webhook_id);
    if (alarms === undefined) this.#queues.set(row.webhook_id, (alarms = new Map()));
    const queue = alarms.get(row.alarm_id);
    if (queue === undefined) alarms.set(row.alarm_id, [row]);
    else if (!queue.some((queued) => queued.id === row.id)) queue.push(row);
  }

  /** A webhook deleted: its waiting notifications and its receiver's state go with it. */
  #forget(id: string): void {
    this.#webhooks.delete(id);
    this.#queues.delete(id);
    this.#receivers.delete(id);
  }

  #receiverOf(id: string): Receiver {
    let receiver = this.#receivers.get(id);
    if (receiver === undefined) this.#receivers.set(id, (receiver = { failures: 0, retryAt: 0, inFlight: 0 }));
    return receiver;
  }

  /**
   * Starts every due head of an alarm's queue, up to the concurrency and each receiver's share; a
   * failing receiver only once its backoff has passed, and one at a time. Sets a timer for the earliest
   * one not due yet.
   */
  #pump(): void {
    if (this.#closed) return;
    const now = this.#clock();
    let earliest = Infinity;
    for (const [webhookId, alarms] of this.#queues) {
      const webhook = this.#webhooks.get(webhookId);
      if (webhook === undefined || alarms.size === 0) {
        this.#queues.delete(webhookId);
        continue;
      }
      const receiver = this.#receiverOf(webhookId);
      if (receiver.failures > 0) {
        if (receiver.inFlight > 0) continue;
        if (receiver.retryAt > now) {
          earliest = Math.min(earliest, receiver.retryAt);
          continue;
        }
        this.#giveUpWaiting(webhook, alarms, now);
      }
      const share = receiver.failures > 0 ? 1 : PER_RECEIVER_CONCURRENCY;
      for (const [alarmId, queue] of alarms) {
        if (receiver.inFlight >= share) break;
        const key = keyOf({ webhook_id: webhookId, alarm_id: alarmId });
        if (this.#inFlight.has(key)) continue;
        const head = queue[0];
        if (head === undefined) {
          alarms.delete(alarmId);
          continue;
        }
        if (head.next_at > now) {
          earliest = Math.min(earliest, head.next_at);
          continue;
        }
        if (this.#inFlight.size >= this.#concurrency) return;
        this.#inFlight.add(key);
        receiver.inFlight++;
        const run = this.#send(webhook, head, receiver).finally(() => {
          this.#inFlight.delete(key);
          receiver.inFlight--;
          this.#running.delete(run);
          this.#pump();
        });
        this.#running.add(run);
      }
    }
    this.#wake(earliest);
  }

  /**
   * A receiver down for longer than the retries last: the notifications waiting for it past their 24 h
   * are given up on without another attempt (each was tried at most by the probes).
   */
  #giveUpWaiting(webhook: Webhook, alarms: Map<string, Notification[]>, now: number): void {
    const giveUpS = this.#retry.giveUpMs / 1000;
    let count = 0;
    for (const queue of alarms.values()) {
      while (queue[0] !== undefined && now >= queue[0].created_at + giveUpS) {
        const row = queue.shift()!;
        row.state = 'failed';
        count++;
        this.#metrics.notifications.inc({ outcome: 'gave_up' });
        const write = this.#record(row).finally(() => this.#running.delete(write));
        this.#running.add(write);
      }
    }
    if (count > 0) {
      this.#log?.error(
        { webhook_id: webhook.id, url: loggableUrl(webhook.url), notifications: count },
        'webhooks: notifications given up on: the receiver has not taken one for 24 h',
      );
    }
  }

  /** The receiver takes notifications again: those waiting out their own backoff go now. */
  #resume(webhookId: string, now: number): void {
    for (const queue of this.#queues.get(webhookId)?.values() ?? []) {
      const head = queue[0];
      if (head !== undefined && head.next_at > now) head.next_at = now;
    }
  }

  #wake(at: number): void {
    if (at === Infinity || at >= this.#wakeAt) return;
    clearTimeout(this.#wakeTimer);
    this.#wakeAt = at;
    this.#wakeTimer = setTimeout(
      () => {
        this.#wakeAt = Infinity;
        this.#wakeTimer = undefined;
        this.#pump();
      },
      Math.max(0, (at - this.#clock()) * 1000),
    );
    this.#wakeTimer.unref();
  }

  async #send(webhook: Webhook, row: Notification, receiver: Receiver): Promise<void> {
    const attempt = await this.#post(webhook, row);
    if (attempt === undefined) return; // closing: it stays pending, sent at the next start
    const now = attempt.at;
    row.attempt_count++;
    row.attempts = [...row.attempts, attempt].slice(-MAX_ATTEMPTS_KEPT);
    const log = { webhook_id: webhook.id, url: loggableUrl(webhook.url), event_id: row.event_id };
    if (attempt.error === null) {
      row.state = 'delivered';
      row.delivered_at = now;
      this.#metrics.notifications.inc({ outcome: 'delivered' });
      if (receiver.failures > 0) {
        receiver.failures = 0;
        this.#resume(webhook.id, now);
        this.#log?.info(log, 'webhooks: the receiver takes notifications again');
      }
    } else {
      this.#metrics.notifications.inc({ outcome: 'failed_attempt' });
      // Requests that were in flight together fail together: one backoff for all of them.
      if (receiver.failures === 0 || now >= receiver.retryAt) {
        receiver.failures++;
        receiver.retryAt = now + this.#delayMs(receiver.failures) / 1000;
        if (receiver.failures === 1) this.#log?.warn({ ...log, error: attempt.error }, 'webhooks: the receiver did not take a notification; retrying with backoff');
      }
      const giveUpAt = row.created_at + this.#retry.giveUpMs / 1000;
      if (now >= giveUpAt) {
        row.state = 'failed';
        this.#metrics.notifications.inc({ outcome: 'gave_up' });
        this.#log?.error({ ...log, attempts: row.attempt_count, error: attempt.error }, 'webhooks: notification given up on after retrying for 24 h');
      } else {
        row.next_at = Math.min(giveUpAt, now + this.#delayMs(row.attempt_count) / 1000);
      }
    }
    if (row.state !== 'pending') {
      const queue = this.#queues.get(row.webhook_id)?.get(row.alarm_id);
      if (queue?.[0] === row) queue.shift();
    }
    await this.#record(row);
  }

  /** Stores a notification's state; a store that fails is logged once until it takes writes again. */
  async #record(row: Notification): Promise<void> {
    try {
      await this.#store.updateNotification(row);
      if (this.#storeFailing) this.#log?.info({}, 'webhooks: delivery states are stored again');
      this.#storeFailing = false;
    } catch (error) {
      // Delivered and not recorded: the next start sends it again (at least once).
      if (!this.#storeFailing) this.#log?.warn({ err: (error as Error).message }, 'webhooks: a delivery state could not be stored');
      this.#storeFailing = true;
    }
  }

  /** Exponential from minMs, doubled per attempt up to maxMs, "equal jitter" (half to all of it). */
  #delayMs(attempts: number): number {
    const full = Math.min(this.#retry.maxMs, this.#retry.minMs * 2 ** Math.min(attempts - 1, 40));
    return full / 2 + Math.random() * (full / 2);
  }

  /** One POST; undefined when cut short by close(). */
  async #post(webhook: Webhook, row: Notification): Promise<DeliveryAttempt | undefined> {
    const at = this.#clock();
    const started = performance.now();
    const finish = (status: number | null, error: string | null): DeliveryAttempt => ({
      at,
      status,
      error,
      duration_ms: Math.round((performance.now() - started) * 10) / 10,
    });
    try {
      const response = await fetch(webhook.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'battery-monitor-webhooks',
          [SIGNATURE_HEADER]: signature(webhook.secret, row.body),
          [EVENT_ID_HEADER]: row.event_id,
          [EVENT_TYPE_HEADER]: `alarm.${row.type}`,
        },
        body: row.body,
        redirect: 'manual',
        dispatcher: this.#agent,
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#timeoutMs)]),
      });
      await drain(response);
      if (response.status >= 200 && response.status < 300) return finish(response.status, null);
      if (response.status >= 300 && response.status < 400) return finish(response.status, `HTTP ${response.status}: a redirect, not followed`);
      return finish(response.status, `HTTP ${response.status}`);
    } catch (error) {
      if (this.#abort.signal.aborted) return undefined;
      return finish(null, this.#reason(error, webhook));
    }
  }

  /** Why a request got no answer, without the URL's path or query (a token may be there). */
  #reason(error: unknown, webhook: Webhook): string {
    const name = (error as Error)?.name;
    if (name === 'TimeoutError') return `no answer within ${this.#timeoutMs / 1000} s`;
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const text = cause?.code ?? cause?.message ?? (error as Error)?.message ?? String(error);
    return text.split(webhook.url).join(loggableUrl(webhook.url)).slice(0, 300);
  }

  /** Stops sending: requests in flight are cut (they stay pending in the store and are sent at the next start). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#wakeTimer);
    this.#abort.abort();
    await Promise.allSettled([...this.#running]);
    await this.#agent.destroy();
  }
}

/** Reads a little of the answer (so the connection can be reused), then lets it go. */
async function drain(response: Response): Promise<void> {
  const reader = response.body?.getReader();
  if (reader === undefined) return;
  let read = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
      if (read > MAX_ANSWER_BYTES) {
        await reader.cancel();
        return;
      }
    }
  } catch {
    // The status is what counts.
  }
}
