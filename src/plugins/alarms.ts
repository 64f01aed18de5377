/**
 * The alarm system, as `app.alarms`: rules, evaluation after commit, persisted alarms (docs/alarms.md).
 * Its store sits beside the records' (alarms.sqlite in DATA_DIR, or the MongoDB database); cleared
 * alarms older than RETENTION_DAYS are removed at start-up and hourly, as records are. Closed before
 * the ingest sink and the store (plugins close in reverse order): it writes what it evaluated, and what
 * is committed after that is evaluated at the next start.
 */
import fp from 'fastify-plugin';
import { AlarmEngine } from '../alarms/alarm-engine.js';
import { openAlarmStore } from '../alarms/open-alarm-store.js';
import { retentionCutoff } from '../store/retention.js';

declare module 'fastify' {
  interface FastifyInstance {
    alarms: AlarmEngine;
  }
}

/**
 * How long start-up waits for evaluation to go live (loaded, and caught up with what was committed
 * before): a long catch-up goes on in the background, commits meanwhile kept in order.
 */
const START_WAIT_MS = 3000;
const HOUR_MS = 3_600_000;

export const alarmsPlugin = fp(
  async (app) => {
    const { config } = app;
    const store = openAlarmStore(config, { info: (message) => app.log.info(message), warn: (message) => app.log.warn(message) });
    const engine = new AlarmEngine({
      store,
      records: app.store,
      afterCommit: app.ingest.afterCommit,
      specs: app.specs,
      noDataSeconds: config.noDataSeconds,
      metrics: app.metrics,
      logger: app.log,
    });
    app.decorate('alarms', engine);

    let retention: NodeJS.Timeout | undefined;
    let removing: Promise<void> = Promise.resolve();
    if (config.retentionDays > 0) {
      const removeOld = async () => {
        try {
          const deleted = await engine.deleteClosedBefore(retentionCutoff(Date.now() / 1000, config.retentionDays));
          if (deleted > 0) app.log.info({ deleted, retention_days: config.retentionDays }, 'retention: removed old cleared alarms');
        } catch (error) {
          app.log.warn({ err: (error as Error).message }, 'retention: could not remove old cleared alarms; will retry in an hour');
        }
      };
      removing = removeOld();
      retention = setInterval(() => (removing = removeOld()), HOUR_MS);
      retention.unref();
    }

    app.addHook('onClose', async () => {
      clearInterval(retention);
      await removing;
      await engine.close();
    });

    let timer: NodeJS.Timeout | undefined;
    await Promise.race([engine.started(), new Promise((resolve) => (timer = setTimeout(resolve, START_WAIT_MS)))]);
    clearTimeout(timer);
  },
  { name: 'alarms', fastify: '5.x', dependencies: ['store', 'ingest', 'specs', 'metrics'], decorators: { fastify: ['config'] } },
);
