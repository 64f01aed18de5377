/**
 * The alarm system, as `app.alarms`: rules, evaluation after commit, persisted alarms (docs/alarms.md).
 * Its store sits beside the records' (alarms.sqlite in DATA_DIR, or the MongoDB database); cleared
 * alarms older than RETENTION_DAYS are removed at start-up and hourly, as records are (once per hour
 * across instances on MongoDB). Closed before the ingest sink and the store (plugins close in reverse
 * order): it writes what it evaluated, and what is committed after that is evaluated at the next start.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { AlarmEngine, type AcknowledgeResult } from '../alarms/alarm-engine.js';
import { MongoAlarmStore } from '../alarms/mongodb-alarm-store.js';
import { openAlarmStore } from '../alarms/open-alarm-store.js';
import { MongoStore } from '../store/mongodb-store.js';
import { WebhookDispatcher, type RetryOptions } from '../alarms/webhook-dispatcher.js';
import { startPeriodic } from '../cluster/periodic.js';
import { retentionCutoff } from '../store/retention.js';

declare module 'fastify' {
  interface FastifyInstance {
    alarms: AlarmEngine;
    webhooks: WebhookDispatcher;
  }
}

export interface AlarmsPluginOptions {
  /** The secret of the WEBHOOK_URLS webhooks; else config.webhookSecret (WEBHOOK_SECRET). */
  webhookSecret?: string;
  /** Where the dashboard is served, for the packs' links in notifications; else config.publicUrl (PUBLIC_URL), else the API's address. */
  publicUrl?: string;
  /** Webhook retries (tests make them short). */
  webhookRetry?: Partial<RetryOptions>;
  webhookTimeoutMs?: number;
}

/** The dashboard's address as the API listens: a wildcard host is not a place to link to. */
function listeningUrl(app: FastifyInstance): string {
  const address = app.server.address() as AddressInfo | string | null;
  const { apiHost, apiPort } = app.config;
  const port = address !== null && typeof address === 'object' ? address.port : apiPort;
  const host = apiHost === '0.0.0.0' || apiHost === '::' || apiHost === '' ? 'localhost' : apiHost.includes(':') ? `[${apiHost}]` : apiHost;
  return `http://${host}:${port}`;
}

/**
 * How long start-up waits for evaluation to go live (loaded, and caught up with what was committed
 * before): a long catch-up goes on in the background, commits meanwhile kept in order.
 */
const START_WAIT_MS = 3000;
const HOUR_MS = 3_600_000;

export const alarmsPlugin = fp<AlarmsPluginOptions>(
  async (app, options) => {
    const { config } = app;
    const store = openAlarmStore(config, { info: (message) => app.log.info(message), warn: (message) => app.log.warn(message) });
    // Several instances: events carry write positions, by which every instance's stream gets them (the cluster feed).
    if (store instanceof MongoAlarmStore && app.store instanceof MongoStore) store.writeFloor = app.store.writeFloor;
    const { clusterSync } = app;
    const publicUrl = options.publicUrl ?? config.publicUrl;
    const webhookSecret = options.webhookSecret ?? config.webhookSecret;
    const webhooks = new WebhookDispatcher({
      store,
      metrics: app.metrics,
      logger: app.log,
      configUrls: config.webhookUrls,
      ...(webhookSecret === undefined ? {} : { configSecret: webhookSecret }),
      baseUrl: () => publicUrl ?? listeningUrl(app),
      ...(options.webhookRetry === undefined ? {} : { retry: options.webhookRetry }),
      ...(options.webhookTimeoutMs === undefined ? {} : { timeoutMs: options.webhookTimeoutMs }),
      ...(clusterSync === undefined ? {} : { changed: () => clusterSync.changed('webhooks') }),
    });
    const engine = new AlarmEngine({
      store,
      records: app.store,
      // Several instances: the packs this one owns, from every instance's records.
      afterCommit: app.ownership ?? app.ingest.afterCommit,
      adopted: app.ownership !== undefined,
      ...(app.ownership === undefined ? {} : { settled: () => app.ownership!.settled() }),
      ...(clusterSync === undefined
        ? {}
        : {
            rulesChanged: () => clusterSync.changed('alarm-rules'),
            forwardAcknowledge: async (alarm, by, note) => (await clusterSync.request('acknowledge', alarm.battery_id, { id: alarm.id, by, note })) as AcknowledgeResult,
          }),
      specs: app.specs,
      noDataSeconds: config.noDataSeconds,
      metrics: app.metrics,
      logger: app.log,
      notifications: webhooks,
    });
    app.ownership?.attach(engine);
    // Several instances: rules changed through another instance apply here within a poll; the
    // acknowledgements other instances got for this instance's packs are made here.
    clusterSync?.onChange('alarm-rules', () => engine.reloadRules());
    clusterSync?.onChange('webhooks', () => webhooks.reload(() => store.loadWebhooks()));
    clusterSync?.handle('acknowledge', {
      owns: (batteryId) => app.ownership?.owns(batteryId) === true && engine.holds(batteryId),
      run: (args) => engine.acknowledge(args.id as string, args.by as string, args.note as string | null, true),
    });
    app.decorate('alarms', engine);
    app.decorate('webhooks', webhooks);

    const retention =
      config.retentionDays > 0
        ? startPeriodic({
            name: 'periodic:alarm-retention',
            periodMs: HOUR_MS,
            leases: app.leases,
            logger: app.log,
            run: async () => {
              try {
                const deleted = await engine.deleteClosedBefore(retentionCutoff(Date.now() / 1000, config.retentionDays));
                if (deleted > 0) app.log.info({ deleted, retention_days: config.retentionDays }, 'retention: removed old cleared alarms');
              } catch (error) {
                app.log.warn({ err: (error as Error).message }, 'retention: could not remove old cleared alarms; will retry in an hour');
              }
            },
          })
        : undefined;

    app.addHook('onClose', async () => {
      await retention?.stop();
      // Deliveries first: those cut short stay in the outbox, sent at the next start.
      await webhooks.close();
      await engine.close();
    });

    let timer: NodeJS.Timeout | undefined;
    await Promise.race([engine.started(), new Promise((resolve) => (timer = setTimeout(resolve, START_WAIT_MS)))]);
    clearTimeout(timer);
  },
  { name: 'alarms', fastify: '5.x', dependencies: ['store', 'ingest', 'specs', 'metrics'], decorators: { fastify: ['config'] } },
);
