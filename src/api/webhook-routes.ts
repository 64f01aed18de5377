/**
 * /api/webhooks: the receivers of alarm notifications (list, add, delete) and each one's deliveries
 * with their attempts. Writes need API_KEY when it is set, reads READ_API_KEY. A webhook's secret is
 * in the answer that creates it and nowhere else; its URL is shown by origin only.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MAX_WEBHOOKS, WebhookRefusedError } from '../alarms/webhook-dispatcher.js';
import { IdSchema } from '../alarms/schemas.js';
import { CreatedWebhookSchema, DeliverySchema, MAX_DELIVERIES_LIMIT, parseWebhookInput, WebhookInput, WebhookSchema } from '../alarms/webhook-schemas.js';
import { requireKey } from './auth.js';
import { bodyErrorResponses, ErrorDetail, errorResponses, Query, securityOf } from './common.js';

const IdParams = Type.Object({ id: IdSchema });
const notFound = { ...ErrorDetail, description: 'No webhook with that id' };
const noContent = (description: string) => ({ type: 'null', description });

export const webhookRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, webhooks } = app;
  const read = { onRequest: requireKey(config, 'read') };
  const write = { onRequest: requireKey(config, 'write') };
  const tags = ['Webhooks'];
  const link = (operationId: string, description: string) => ({ operationId, parameters: { id: '$response.body#/id' }, description });

  app.get(
    '/api/webhooks',
    {
      ...read,
      schema: {
        operationId: 'listWebhooks',
        summary: 'Every webhook',
        description: 'Those added here and those WEBHOOK_URLS sets, oldest first. Secrets are never shown; URLs by origin only.',
        tags,
        security: securityOf(config, 'read'),
        response: { 200: Type.Object({ webhooks: Type.Array(WebhookSchema) }), ...errorResponses },
      },
    },
    async () => ({ webhooks: await webhooks.list() }),
  );

  app.post(
    '/api/webhooks',
    {
      ...write,
      links: {
        201: {
          deliveries: link('listWebhookDeliveries', "The webhook's deliveries"),
          delete: link('deleteWebhook', 'Delete the webhook created'),
        },
      },
      schema: {
        operationId: 'createWebhook',
        summary: 'Add a webhook',
        description:
          'It gets every alarm change stored from now on: a JSON POST signed with `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>` ' +
          '(docs/alarms.md). The answer holds the secret: it is not shown again.',
        tags,
        security: securityOf(config, 'write'),
        body: WebhookInput,
        response: {
          201: { ...CreatedWebhookSchema, description: 'The webhook, with its id and secret' },
          409: { ...ErrorDetail, description: `Too many webhooks (${MAX_WEBHOOKS}, WEBHOOK_URLS included): delete one first` },
          ...bodyErrorResponses,
        },
      },
    },
    async (request, reply) => {
      const parsed = parseWebhookInput(request.body);
      if (!parsed.ok) return reply.code(422).send({ detail: parsed.detail });
      try {
        return reply.code(201).send(await webhooks.create(randomUUID(), parsed));
      } catch (error) {
        if (error instanceof WebhookRefusedError) return reply.code(409).send({ detail: error.message });
        throw error;
      }
    },
  );

  app.delete(
    '/api/webhooks/:id',
    {
      ...write,
      schema: {
        operationId: 'deleteWebhook',
        summary: 'Delete a webhook',
        description: 'With its deliveries; what it had not delivered yet is dropped. A webhook set by WEBHOOK_URLS answers 409.',
        tags,
        security: securityOf(config, 'write'),
        params: IdParams,
        response: {
          204: noContent('Deleted'),
          404: notFound,
          409: { ...ErrorDetail, description: 'Set by WEBHOOK_URLS: remove it there' },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      try {
        if (!(await webhooks.delete(request.params.id))) return reply.code(404).send({ detail: `No webhook ${request.params.id}` });
      } catch (error) {
        if (error instanceof WebhookRefusedError) return reply.code(409).send({ detail: error.message });
        throw error;
      }
      return reply.code(204).send();
    },
  );

  app.get(
    '/api/webhooks/:id/deliveries',
    {
      ...read,
      schema: {
        operationId: 'listWebhookDeliveries',
        summary: "A webhook's deliveries, newest first",
        description:
          'One per alarm change: pending (on its way, or waiting to retry with backoff), delivered, or failed (retried for 24 h), ' +
          'with its latest attempts and the answers (status, time, error).',
        tags,
        security: securityOf(config, 'read'),
        params: IdParams,
        querystring: Query({
          limit: Type.Integer({ minimum: 1, maximum: MAX_DELIVERIES_LIMIT, default: 100, description: 'At most this many, newest first' }),
        }),
        response: { 200: Type.Object({ deliveries: Type.Array(DeliverySchema) }), 404: notFound, ...errorResponses },
      },
    },
    async (request, reply) => {
      const deliveries = await webhooks.deliveries(request.params.id, request.query.limit);
      if (deliveries === undefined) return reply.code(404).send({ detail: `No webhook ${request.params.id}` });
      // The body sent is the receiver's business (and the alarm's, at /api/alarms/{id}).
      return { deliveries: deliveries.map(({ body: _body, ...delivery }) => delivery) };
    },
  );
};
