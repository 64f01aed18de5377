/**
 * Fleet-wide reads: the list of packs, and the dashboard summary of the original service. The
 * summary answers under the original's own keys (battery_data, performance, prediction, specs,
 * thresholds): frontends written for the original read exactly those names.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { KIND_NAMES } from '../records/kinds.js';
import { BatterySpecsFile } from '../specs.js';
import { BatteryQuery, errorResponses, recordSchema } from './common.js';
import { requireKey } from './auth.js';

const KindCounts = Type.Object(Object.fromEntries(KIND_NAMES.map((kind) => [kind, Type.Integer()])));

export const fleetRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { store, specs } = app;
  const onRequest = requireKey(app.config, 'read');

  app.get(
    '/api/batteries',
    {
      onRequest,
      schema: {
        summary: 'Every pack with its last-seen time and record count per kind',
        tags: ['Fleet'],
        response: {
          200: Type.Object({
            batteries: Type.Array(
              Type.Object({
                battery_id: Type.String({ example: 'pack-1' }),
                last_seen: Type.Number({ description: 'Unix seconds of the newest record of any kind' }),
                counts: KindCounts,
                last_seen_by_kind: Type.Object(Object.fromEntries(KIND_NAMES.map((kind) => [kind, Type.Optional(Type.Number())]))),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
    },
    async () => ({ batteries: await store.batteries() }),
  );

  const { battery_specifications, monitoring_thresholds } = BatterySpecsFile.properties;
  app.get(
    '/api/dashboard',
    {
      onRequest,
      schema: {
        summary: 'Latest record of each kind, with the battery specifications and monitoring thresholds',
        description:
          'The keys are those of the original Battery Monitoring API, so its frontends work unchanged. ' +
          'A record is null while none of its kind is stored (for this pack, with battery_id).',
        tags: ['Fleet'],
        querystring: BatteryQuery,
        response: {
          200: Type.Object({
            battery_data: Type.Union([recordSchema('battery-data'), Type.Null()], { description: 'Newest battery reading' }),
            performance: Type.Union([recordSchema('battery-performance'), Type.Null()], { description: 'Newest performance record' }),
            prediction: Type.Union([recordSchema('battery-prediction'), Type.Null()], { description: 'Newest life prediction' }),
            specs: battery_specifications,
            thresholds: monitoring_thresholds,
            timestamp: Type.Number({ description: 'Server time, Unix seconds (beyond the original: lets a page estimate clock skew)' }),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const batteryId = request.query.battery_id;
      const [battery_data, performance, prediction] = await Promise.all([
        store.latest('battery-data', batteryId),
        store.latest('battery-performance', batteryId),
        store.latest('battery-prediction', batteryId),
      ]);
      return {
        battery_data,
        performance,
        prediction,
        specs: specs.battery_specifications,
        thresholds: specs.monitoring_thresholds,
        timestamp: Date.now() / 1000,
      };
    },
  );
};
