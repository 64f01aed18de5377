/**
 * /api/alarm-rules and /api/alarms: the rules (read, create, replace, delete) and the alarms they
 * raised (list with filters, one with its events, acknowledge); /api/webhooks in webhook-routes.ts. Writes need API_KEY when it is set,
 * reads READ_API_KEY. Bodies are validated here against the documented schemas (app.ts leaves bodies
 * to the handlers) and answered 422 naming each bad field, like the rest of the API.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { RuleLimitError, type AcknowledgeResult } from '../alarms/alarm-engine.js';
import { NoOwnerAnswerError } from '../cluster/cluster-sync.js';
import { SEVERITIES } from '../alarms/model.js';
import {
  AcknowledgeInput,
  AlarmRuleInput,
  AlarmRuleSchema,
  AlarmSchema,
  AlarmStateFilter,
  AlarmWithEventsSchema,
  ID_PATTERN,
  IdSchema,
  LimitSchema,
  parseAcknowledge,
  parseRuleInput,
  SinceSchema,
} from '../alarms/schemas.js';
import { requireKey } from './auth.js';
import { BatteryId, bodyErrorResponses, ErrorDetail, errorResponses, Query, securityOf } from './common.js';
import { webhookRoutes } from './webhook-routes.js';

const IdParams = Type.Object({ id: IdSchema });
const noContent = (description: string) => ({ type: 'null', description });
const notFound = (what: string) => ({ ...ErrorDetail, description: `No ${what} with that id` });

export const alarmRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, alarms } = app;
  await app.register(webhookRoutes);
  const read = { onRequest: requireKey(config, 'read') };
  const write = { onRequest: requireKey(config, 'write') };
  const readSecurity = securityOf(config, 'read');
  const writeSecurity = securityOf(config, 'write');
  const ruleTags = ['Alarm rules'];
  const alarmTags = ['Alarms'];
  // Where a created rule can be read, replaced and deleted: said to clients (and to schemathesis' stateful phase).
  const ruleLink = (operationId: string, description: string) => ({ operationId, parameters: { id: '$response.body#/id' }, description });

  app.get(
    '/api/alarm-rules',
    {
      ...read,
      schema: {
        operationId: 'listAlarmRules',
        summary: 'Every alarm rule',
        description: 'The default rules (from the specs file and NO_DATA_SECONDS) and those added here, oldest first.',
        tags: ruleTags,
        security: readSecurity,
        response: { 200: Type.Object({ rules: Type.Array(AlarmRuleSchema) }), ...errorResponses },
      },
    },
    async () => ({ rules: await alarms.rules() }),
  );

  app.post(
    '/api/alarm-rules',
    {
      ...write,
      links: {
        201: {
          get: ruleLink('getAlarmRule', 'The rule created'),
          replace: ruleLink('replaceAlarmRule', 'Replace the rule created'),
          delete: ruleLink('deleteAlarmRule', 'Delete the rule created'),
        },
      },
      schema: {
        operationId: 'createAlarmRule',
        summary: 'Add an alarm rule',
        description: 'Judged from the next reading on. The server gives it its id.',
        tags: ruleTags,
        security: writeSecurity,
        body: AlarmRuleInput,
        response: {
          201: { ...AlarmRuleSchema, description: 'The rule, with its id' },
          409: { ...ErrorDetail, description: 'Too many rules (1000): delete one first' },
          ...bodyErrorResponses,
        },
      },
    },
    async (request, reply) => {
      const parsed = parseRuleInput(request.body);
      if (!parsed.ok) return reply.code(422).send({ detail: parsed.detail });
      try {
        return reply.code(201).send(await alarms.createRule(parsed.settings));
      } catch (error) {
        if (error instanceof RuleLimitError) return reply.code(409).send({ detail: error.message });
        throw error;
      }
    },
  );

  app.get(
    '/api/alarm-rules/:id',
    {
      ...read,
      schema: {
        operationId: 'getAlarmRule',
        summary: 'One alarm rule',
        tags: ruleTags,
        security: readSecurity,
        params: IdParams,
        response: { 200: AlarmRuleSchema, 404: notFound('rule'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const rule = await alarms.rule(request.params.id);
      return rule ?? reply.code(404).send({ detail: `No alarm rule ${request.params.id}` });
    },
  );

  app.put(
    '/api/alarm-rules/:id',
    {
      ...write,
      schema: {
        operationId: 'replaceAlarmRule',
        summary: 'Replace an alarm rule',
        description:
          'New levels, hysteresis or debounce apply from the next reading and open alarms stay open. A new type, ' +
          'kind or field clears the rule\'s open alarms (reason rule_changed), disabling it too (rule_disabled), and ' +
          'so does a new scope for the packs it no longer watches. A default rule edited here no longer follows the specs file.',
        tags: ruleTags,
        security: writeSecurity,
        params: IdParams,
        body: AlarmRuleInput,
        response: { 200: AlarmRuleSchema, 404: notFound('rule'), ...bodyErrorResponses },
      },
    },
    async (request, reply) => {
      const parsed = parseRuleInput(request.body);
      if (!parsed.ok) return reply.code(422).send({ detail: parsed.detail });
      const rule = await alarms.replaceRule(request.params.id, parsed.settings);
      return rule ?? reply.code(404).send({ detail: `No alarm rule ${request.params.id}` });
    },
  );

  app.delete(
    '/api/alarm-rules/:id',
    {
      ...write,
      schema: {
        operationId: 'deleteAlarmRule',
        summary: 'Delete an alarm rule',
        description: 'Its open alarms clear (reason rule_deleted); its alarms stay in the history. A deleted default rule is not created again.',
        tags: ruleTags,
        security: writeSecurity,
        params: IdParams,
        response: { 204: noContent('Deleted'), 404: notFound('rule'), ...errorResponses },
      },
    },
    async (request, reply) => {
      if (!(await alarms.deleteRule(request.params.id))) return reply.code(404).send({ detail: `No alarm rule ${request.params.id}` });
      return reply.code(204).send();
    },
  );

  app.get(
    '/api/alarms',
    {
      ...read,
      schema: {
        operationId: 'listAlarms',
        summary: 'Alarms, newest raised first',
        description:
          'Filters combine. `since` keeps the alarms open at some moment since then: still open, or cleared at or after ' +
          'it (what a chart of that range shows). `severity` is the alarm\'s severity now, or the last before it cleared.',
        tags: alarmTags,
        security: readSecurity,
        querystring: Query({
          state: AlarmStateFilter,
          battery_id: Type.Optional(BatteryId),
          severity: Type.Optional(Type.Enum(SEVERITIES, { description: 'warning or critical' })),
          rule_id: Type.Optional(Type.String({ pattern: ID_PATTERN, description: 'Raised by this rule' })),
          since: Type.Optional(SinceSchema),
          limit: LimitSchema,
        }),
        response: { 200: Type.Object({ alarms: Type.Array(AlarmSchema) }), ...errorResponses },
      },
    },
    async (request) => {
      const { state, battery_id, severity, rule_id, since, limit } = request.query;
      return {
        alarms: await alarms.alarms({
          state,
          limit,
          ...(battery_id === undefined ? {} : { batteryId: battery_id }),
          ...(severity === undefined ? {} : { severity }),
          ...(rule_id === undefined ? {} : { ruleId: rule_id }),
          ...(since === undefined ? {} : { since }),
        }),
      };
    },
  );

  app.get(
    '/api/alarms/:id',
    {
      ...read,
      schema: {
        operationId: 'getAlarm',
        summary: 'One alarm with its events',
        tags: alarmTags,
        security: readSecurity,
        params: IdParams,
        response: { 200: AlarmWithEventsSchema, 404: notFound('alarm'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const alarm = await alarms.alarm(request.params.id);
      return alarm ?? reply.code(404).send({ detail: `No alarm ${request.params.id}` });
    },
  );

  app.post(
    '/api/alarms/:id/acknowledge',
    {
      ...write,
      schema: {
        operationId: 'acknowledgeAlarm',
        summary: 'Acknowledge an open alarm',
        description:
          'Someone has seen it: it stays open until its condition clears, and goes back to active if it escalates. ' +
          'A cleared alarm, or one already acknowledged, answers 409. With several instances, the one that evaluates the ' +
          'alarm\'s pack acknowledges it, wherever the request lands; when none answers within a few seconds (the pack is ' +
          'moving to another instance), 503 with a Retry-After.',
        tags: alarmTags,
        security: writeSecurity,
        params: IdParams,
        body: AcknowledgeInput,
        response: {
          200: { ...AlarmWithEventsSchema, description: 'The alarm, acknowledged, with its events' },
          404: notFound('alarm'),
          409: { ...ErrorDetail, description: 'The alarm is cleared, or acknowledged already' },
          ...bodyErrorResponses,
          503: { ...ErrorDetail, description: 'The store is unreachable, or no instance that evaluates the alarm\'s pack answered in time' },
        },
      },
    },
    async (request, reply) => {
      const parsed = parseAcknowledge(request.body);
      if (!parsed.ok) return reply.code(422).send({ detail: parsed.detail });
      let result: AcknowledgeResult;
      try {
        result = await alarms.acknowledge(request.params.id, parsed.by, parsed.note);
      } catch (error) {
        if (error instanceof NoOwnerAnswerError) return reply.code(503).header('retry-after', String(error.retryAfterSeconds)).send({ detail: error.message });
        throw error;
      }
      switch (result.status) {
        case 'acknowledged':
          return result.alarm;
        case 'not_found':
          return reply.code(404).send({ detail: `No alarm ${request.params.id}` });
        case 'cleared':
          return reply.code(409).send({ detail: `Alarm ${request.params.id} is cleared: there is nothing to acknowledge` });
        case 'already_acknowledged':
          return reply.code(409).send({ detail: `Alarm ${request.params.id} was acknowledged already, by ${result.alarm.acknowledged_by ?? 'someone'}` });
      }
    },
  );
};
