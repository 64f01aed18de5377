/**
 * The store, as `app.store`: the SQLite file in DATA_DIR, or MongoDB when MONGODB_URI is set. Old
 * records are removed at start-up and hourly (RETENTION_DAYS; once per hour across instances on
 * MongoDB). Closed last, once everything that writes to it has finished.
 *
 * On MongoDB, `app.cluster` is the cluster feed (cluster/cluster-feed.ts): what every instance on the
 * database stores, for this instance's subscribers. Undefined on SQLite (one process: the ingest
 * sink's after-commit stage is the whole story). `app.leases` are the leases in the store that share
 * work out among the instances (cluster/leases.ts), and `app.ownership` hands each pack's alarms and
 * analytics to one of them (cluster/pack-ownership.ts); both undefined on SQLite. `app.clusterSync`
 * (cluster/cluster-sync.ts) tells the other instances of rule and spec changes made here, and runs
 * here the commands (acknowledgements) other instances got for the packs this one owns.
 */
import fp from 'fastify-plugin';
import { ClusterFeed } from '../cluster/cluster-feed.js';
import { ClusterSync } from '../cluster/cluster-sync.js';
import { newInstanceId } from '../cluster/instance-id.js';
import { Leases } from '../cluster/leases.js';
import { PackOwnership } from '../cluster/pack-ownership.js';
import { MongoStore } from '../store/mongodb-store.js';
import { openStore } from '../store/open-store.js';
import { startRetention } from '../store/retention.js';
import type { Store } from '../store/store.js';

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
    /** INSTANCE_ID, else host name and process id (cluster/instance-id.ts). */
    instanceId: string;
    cluster: ClusterFeed | undefined;
    /** Leases in the store (cluster/leases.ts); undefined on SQLite. */
    leases: Leases | undefined;
    /** Which packs' alarms and analytics run here (cluster/pack-ownership.ts); undefined on SQLite. */
    ownership: PackOwnership | undefined;
    /** Setting changes and owner commands between the instances (cluster/cluster-sync.ts); undefined on SQLite. */
    clusterSync: ClusterSync | undefined;
  }
}

export const storePlugin = fp(
  async (app) => {
    const { config } = app;
    const store = await openStore(config, app.log);
    app.decorate('store', store);
    const instanceId = newInstanceId(config);
    app.decorate('instanceId', instanceId);
    const cluster =
      store instanceof MongoStore
        ? new ClusterFeed({ store, instanceId, leaseSeconds: config.leaseSeconds, pollMs: config.clusterPollMs, logger: app.log })
        : undefined;
    const leases =
      store instanceof MongoStore
        ? new Leases({ store, instanceId, leaseSeconds: config.leaseSeconds, metrics: app.metrics, logger: app.log })
        : undefined;
    const ownership = cluster === undefined || leases === undefined ? undefined : new PackOwnership({ feed: cluster, leases, records: store, logger: app.log });
    app.decorate('cluster', cluster);
    app.decorate('leases', leases);
    const clusterSync = store instanceof MongoStore ? new ClusterSync({ store, instanceId, pollMs: config.clusterPollMs, logger: app.log }) : undefined;
    app.decorate('ownership', ownership);
    app.decorate('clusterSync', clusterSync);
    await cluster?.start();
    // Once every engine has attached (the alarms and analytics plugins come later).
    app.addHook('onReady', async () => {
      ownership?.start();
      clusterSync?.start();
    });
    // Before the engines close: no command is taken for an engine on its way out.
    app.addHook('preClose', async () => clusterSync?.close());
    const retention = startRetention(store, config.retentionDays, app.log, leases);
    app.addHook('onClose', async () => {
      await retention.stop();
      // After the engines (closed before this plugin): their state is saved, the packs can go.
      await ownership?.close();
      await cluster?.close();
      await store.close();
    });
  },
  { name: 'store', fastify: '5.x', dependencies: ['metrics'], decorators: { fastify: ['config'] } },
);
