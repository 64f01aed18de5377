/**
 * /api/batteries/{battery_id}/health and /api/batteries/{battery_id}/specs: a pack's analytics
 * estimates (docs/analytics.md), and its specifications for them, overridable per pack. Reads need
 * READ_API_KEY when it is set, the PUT needs API_KEY.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { HealthSchema, PackSpecsAnswer, parseSpecsInput, SpecsInput } from '../analytics/schemas.js';
import { AnalyticsUnavailableError } from '../analytics/analytics-engine.js';
import { requireKey } from './auth.js';
import { BatteryId, bodyErrorResponses, ErrorDetail, errorResponses, securityOf } from './common.js';

const Params = Type.Object({ battery_id: BatteryId });
const tags = ['Battery analytics'];

export const analyticsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store } = app;
  const readSecurity = securityOf(config, 'read');
  const writeSecurity = securityOf(config, 'write');
  const engine = () => {
    if (app.analytics === undefined) throw new AnalyticsUnavailableError('Battery analytics is off on this instance (ANALYTICS_ENABLED)');
    return app.analytics;
  };

  app.get(
    '/api/batteries/:battery_id/health',
    {
      onRequest: requireKey(config, 'read'),
      schema: {
        operationId: 'batteryHealth',
        summary: 'A pack\'s state of health, charge, cycles, energy and remaining life',
        description:
          'Computed by the service from the pack\'s battery-data readings (docs/analytics.md). Each estimate has its unit, ' +
          'its 95 % interval where it has one, the capacity segments behind it and its method; one that cannot be made ' +
          'yet is null with the reason. soh and soc are percent; rul_cycles is in equivalent full cycles.',
        tags,
        security: readSecurity,
        params: Params,
        response: { 200: HealthSchema, 404: { ...ErrorDetail, description: 'No pack with that id' }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const batteryId = request.params.battery_id;
      const analytics = engine();
      const health = await analytics.health(batteryId);
      if (health !== null) return health;
      // A pack the store knows that analytics has taken nothing of (only older readings, or other kinds).
      const known = (await store.batteries()).some((battery) => battery.battery_id === batteryId);
      if (!known) return reply.code(404).send({ detail: `No battery ${batteryId} found` });
      return analytics.emptyHealth(batteryId);
    },
  );

  app.get(
    '/api/batteries/:battery_id/specs',
    {
      onRequest: requireKey(config, 'read'),
      schema: {
        operationId: 'batterySpecs',
        summary: 'A pack\'s specifications for analytics',
        description: 'The specs in force (its overrides over the defaults from the specs file), the overrides, and the defaults.',
        tags,
        security: readSecurity,
        params: Params,
        response: { 200: PackSpecsAnswer, ...errorResponses },
      },
    },
    async (request) => {
      const batteryId = request.params.battery_id;
      const analytics = engine();
      const entry = await analytics.overridesOf(batteryId);
      return {
        battery_id: batteryId,
        specs: analytics.specsOf(batteryId),
        overrides: entry?.overrides ?? {},
        defaults: analytics.defaults,
        updated_at: entry?.updated_at ?? null,
      };
    },
  );

  app.put(
    '/api/batteries/:battery_id/specs',
    {
      onRequest: requireKey(config, 'write'),
      schema: {
        operationId: 'replaceBatterySpecs',
        summary: 'Override a pack\'s specifications',
        description:
          'Replaces the pack\'s overrides (a field left out follows the defaults). They apply to its estimates at once ' +
          '(health and cycles are relative to the nominal capacity) and to its readings from the next one on (the ' +
          'full and empty voltages). A pack may be given specs before it sends anything.',
        tags,
        security: writeSecurity,
        params: Params,
        body: SpecsInput,
        response: { 200: PackSpecsAnswer, ...bodyErrorResponses },
      },
    },
    async (request, reply) => {
      const batteryId = request.params.battery_id;
      const analytics = engine();
      const parsed = parseSpecsInput(request.body, analytics.defaults);
      if (!parsed.ok) return reply.code(422).send({ detail: parsed.detail });
      const entry = await analytics.putSpecs(batteryId, parsed.overrides);
      return {
        battery_id: batteryId,
        specs: analytics.specsOf(batteryId),
        overrides: entry.overrides,
        defaults: analytics.defaults,
        updated_at: Object.keys(entry.overrides).length === 0 ? null : entry.updated_at,
      };
    },
  );
};
