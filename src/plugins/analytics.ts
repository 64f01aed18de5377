/**
 * Battery analytics, as `app.analytics`: per-pack charge, energy, cycles, state of charge and health,
 * kept after commit (docs/analytics.md). Its store sits beside the records' (analytics.sqlite in
 * DATA_DIR, or the MongoDB database). Closed before the ingest sink and the store (plugins close in
 * reverse order): it sends the estimates it made and saves the states.
 */
import fp from 'fastify-plugin';
import { AnalyticsEngine } from '../analytics/analytics-engine.js';
import { openAnalyticsStore } from '../analytics/open-analytics-store.js';
import { defaultSpecs } from '../analytics/pack-specs.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Undefined when analytics is off (ANALYTICS_ENABLED=false). */
    analytics: AnalyticsEngine | undefined;
  }
}

export interface AnalyticsPluginOptions {
  /** ANALYTICS_ENABLED (default true): off, no reading is taken and the routes answer 503. */
  enabled?: boolean;
  /** ANALYTICS_END_OF_LIFE (default 80): state of health in percent where a pack's life ends, unless its specs say otherwise. */
  endOfLifeSoh?: number;
  /** ANALYTICS_TAPER_C (default 0.05, C/20): full needs the current below this fraction of the nominal capacity. */
  taperC?: number;
  checkpointMs?: number;
}

export const analyticsPlugin = fp<AnalyticsPluginOptions>(
  async (app, options) => {
    const config = app.config;
    if (!(options.enabled ?? config.analyticsEnabled)) {
      app.decorate('analytics', undefined);
      return;
    }
    const store = openAnalyticsStore(config, { info: (message) => app.log.info(message), warn: (message) => app.log.warn(message) });
    const engine = new AnalyticsEngine({
      store,
      records: app.store,
      // Several instances: the packs this one owns, from every instance's records.
      afterCommit: app.ownership ?? app.ingest.afterCommit,
      adopted: app.ownership !== undefined,
      ...(app.ownership === undefined ? {} : { settled: () => app.ownership!.settled() }),
      ...(app.clusterSync === undefined ? {} : { specsChanged: () => app.clusterSync!.changed('pack-specs') }),
      ingest: app.ingest,
      defaults: defaultSpecs(app.specs, options.endOfLifeSoh ?? config.analyticsEndOfLife),
      settings: { maxGapSeconds: config.analyticsMaxGapSeconds, taperC: options.taperC ?? config.analyticsTaperC },
      logger: app.log,
      ...(options.checkpointMs === undefined ? {} : { checkpointMs: options.checkpointMs }),
    });
    app.ownership?.attach(engine);
    // Several instances: specs changed through another instance apply here within a poll.
    app.clusterSync?.onChange('pack-specs', () => engine.reloadSpecs());
    app.decorate('analytics', engine);
    // Start-up does not wait for the catch-up: commits meanwhile are kept in order, and /health waits for it
    // (bounded). Waiting here would add to the app's start, which Fastify bounds as a whole (pluginTimeout).
    app.addHook('onClose', () => engine.close());
  },
  { name: 'analytics', fastify: '5.x', dependencies: ['store', 'ingest', 'specs', 'metrics'], decorators: { fastify: ['config'] } },
);
