/**
 * The routes of every record kind, generated from the kinds table: POST, latest, history,
 * aggregate and export. One handler each, whatever the kind.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { RecordBatch } from '../ingest/record-batch.js';
import { RecordsRefusedError } from '../ingest/record-sink.js';
import { aggregatedFields, ALL_KINDS, csvColumns, type KindSpec, type RecordInput } from '../records/kinds.js';
import { inputSchemas, MAX_BATCH_RECORDS } from '../records/schemas.js';
import { validateBody, type ValidationDetail } from '../records/validate.js';
import { MAX_BUCKETS, planBuckets } from '../store/buckets.js';
import { REFUSAL_TEXT } from '../store/store.js';
import { bodyErrorResponses, errorResponses, HistoryQuery, Hours, notFound, Query, RecordQuery, recordSchema, securityOf, type RoutesApp } from './common.js';
import { requireKey } from './auth.js';
import { exportBody, exportContentType } from './export.js';

const nowSeconds = () => Date.now() / 1000;

export const recordRoutes: FastifyPluginAsyncTypebox = async (app) => {
  for (const kind of ALL_KINDS) registerKind(app, kind);
};

function registerKind(app: RoutesApp, kind: KindSpec): void {
  const { config, store, ingest } = app;
  const base = `/api/${kind.name}`;
  const tags = [kind.title];
  const label = kind.label;
  const readHook = requireKey(config, 'read');
  const readSecurity = securityOf(config, 'read');
  const Record = recordSchema(kind.name);
  const Input = inputSchemas[kind.name]!;
  const clockBound = { maxClockSkewSeconds: config.maxClockSkewSeconds };
  const operationId = (verb: string) => `${verb}${kind.title}`;
  // Where what a POST stored can be read: the pack it named. OpenAPI links say so to clients (and to
  // schemathesis, which would otherwise guess that the response's record `id` is a `battery_id`).
  const readBack = (verb: string, description: string) => ({
    operationId: operationId(verb),
    parameters: { battery_id: '$request.body#/battery_id' },
    description,
  });

  app.post(
    base,
    {
      onRequest: requireKey(config, 'write'),
      links: {
        200: {
          latest: readBack('latest', 'The newest record of the pack written to (battery_id of a single record)'),
          history: readBack('history', 'The history of the pack written to'),
          aggregate: readBack('aggregate', 'The aggregates of the pack written to'),
          export: readBack('export', 'The export of the pack written to'),
        },
      },
      schema: {
        operationId: operationId('store'),
        summary: `Store ${label.toLowerCase()}: one record or an array of up to ${MAX_BATCH_RECORDS}`,
        description:
          'Answers once the records are durable. An array is stored all or nothing. Fields a record schema does not ' +
          'name are ignored. With an Idempotency-Key header, a retry of the same records with the same key stores ' +
          'nothing twice and answers the ids stored the first time (record i is keyed by the header, i and a digest of ' +
          'the record); different records under a key already used are a different request, and are stored. ' +
          'While too many records wait to be stored it answers 503 at once, with a Retry-After ' +
          'header (seconds) and stores nothing: send the same request again after that long. A record the store ' +
          'itself refuses (a constraint of the store) fails the request with 422 naming it, type value_error.store_refused.',
        tags,
        security: securityOf(config, 'write'),
        body: Type.Union([Input, Type.Array(Input, { minItems: 1, maxItems: MAX_BATCH_RECORDS })]),
        headers: Type.Object({
          'idempotency-key': Type.Optional(
            Type.String({ minLength: 1, maxLength: 200, description: 'Makes a retried POST safe: the same for every attempt of one request' }),
          ),
        }),
        response: {
          200: Type.Object({
            message: Type.String({ example: `${label} stored successfully` }),
            id: Type.String({ description: 'Id of the (first) stored record' }),
            ids: Type.Optional(Type.Array(Type.String(), { description: 'Arrays only: every id, in order' })),
            count: Type.Integer({ description: 'Records stored' }),
          }),
          ...bodyErrorResponses,
        },
      },
    },
    async (request, reply) => {
      // The same validator as the TCP collector's, so both answer alike (app.ts leaves bodies to it).
      const result = validateBody(kind.name, request.body, clockBound);
      if (!result.ok) return reply.code(422).send({ detail: result.detail.slice(0, 100) });
      const receivedAt = nowSeconds();
      const idempotencyKey = request.headers['idempotency-key'];
      const batch = new RecordBatch(kind.name, result.records.length);
      result.records.forEach((input, index) =>
        batch.append(input, receivedAt, idempotencyKey === undefined ? undefined : recordKey(idempotencyKey, index, input)),
      );
      // A full ingest queue refuses at once (IngestFullError: 503 with Retry-After, see app.ts).
      let ids: string[];
      try {
        ids = await ingest.submit(batch);
      } catch (error) {
        // The store refused records for themselves: the request stored nothing, and sending it again will not help.
        if (error instanceof RecordsRefusedError) return reply.code(422).send({ detail: refusalDetail(error, result.isArray) });
        throw error;
      }
      if (!result.isArray) return { message: `${label} stored successfully`, id: ids[0]!, count: 1 };
      return { message: `${ids.length} records stored successfully`, id: ids[0]!, ids, count: ids.length };
    },
  );

  app.get(
    `${base}/latest`,
    {
      onRequest: readHook,
      schema: {
        operationId: operationId('latest'),
        summary: `Newest ${label.toLowerCase()} record`,
        description: 'Of one pack (battery_id), of one producer (source), or both.',
        tags,
        security: readSecurity,
        querystring: RecordQuery,
        response: { 200: Record, 404: notFound, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { battery_id, source } = request.query;
      const record = await store.latest(kind.name, battery_id, source);
      if (record === null) {
        // The original's words when nothing narrows the read (its frontends may match them).
        const scope = [battery_id === undefined ? '' : ` for battery ${battery_id}`, source === undefined ? '' : ` from source ${source}`].join('');
        return reply.code(404).send({ detail: `No ${label.toLowerCase()} found${scope}` });
      }
      return record;
    },
  );

  app.get(
    `${base}/history`,
    {
      onRequest: readHook,
      schema: {
        operationId: operationId('history'),
        summary: `${label} history, newest first`,
        tags,
        security: readSecurity,
        querystring: HistoryQuery,
        response: { 200: Type.Array(Record), ...errorResponses },
      },
    },
    async (request) => {
      const { hours, limit, battery_id, source } = request.query;
      return store.history(kind.name, { since: nowSeconds() - hours * 3600, limit, batteryId: battery_id, source });
    },
  );

  // Every stored record has a finite value for every measurement, and input bounds (schemas.ts) keep
  // their sums finite, so a bucket's min, max and mean of each are always numbers. A derived field
  // (from per-cell readings) is there only when a record of the bucket had it.
  const statsOf = (description: string) =>
    Type.Object(
      Object.fromEntries(
        aggregatedFields(kind.name).map((field) => [
          field.name,
          field.alwaysStored ? Type.Number() : Type.Optional(Type.Number({ description: 'Only in buckets with a record that has it; the mean is over those' })),
        ]),
      ),
      { description },
    );
  app.get(
    `${base}/aggregate`,
    {
      onRequest: readHook,
      schema: {
        operationId: operationId('aggregate'),
        security: readSecurity,
        summary: `${label} in time buckets: count, min, max and mean of each field`,
        description:
          'Buckets start at multiples of bucket_seconds; only buckets holding records are listed. Long ranges are ' +
          'answered from per-minute and per-hour rollups kept at ingest, with the same figures as the raw rows. ' +
          'With source, from the raw rows (rollups are kept per pack, not per producer): slower over long ranges.',
        tags,
        querystring: Query({
          hours: Hours(24),
          buckets: Type.Integer({ minimum: 1, maximum: MAX_BUCKETS, default: 500, description: 'At most this many buckets' }),
          battery_id: RecordQuery.properties.battery_id,
          source: RecordQuery.properties.source,
        }),
        response: {
          200: Type.Object({
            bucket_seconds: Type.Integer(),
            from: Type.Number({ description: 'Unix seconds, start of the first bucket' }),
            to: Type.Number({ description: 'Unix seconds, end of the range' }),
            buckets: Type.Array(
              Type.Object({
                start: Type.Number(),
                count: Type.Integer(),
                min: statsOf('Smallest value per field'),
                max: statsOf('Largest value per field'),
                mean: statsOf('Mean per field'),
              }),
            ),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { hours, buckets, battery_id, source } = request.query;
      const to = nowSeconds();
      const plan = planBuckets(to - hours * 3600, to, buckets);
      const answer = await store.aggregate(kind.name, { ...plan, batteryId: battery_id, source });
      return { bucket_seconds: plan.bucketSeconds, from: plan.from, to: plan.to, buckets: answer };
    },
  );

  const columns = csvColumns(kind.name);
  app.get(
    `${base}/export`,
    {
      onRequest: readHook,
      schema: {
        operationId: operationId('export'),
        security: readSecurity,
        summary: `Download ${label.toLowerCase()} as CSV or NDJSON, oldest first`,
        description:
          'Streamed: any range can be exported without the server holding it in memory. CSV has a column for every ' +
          'field, empty where a record lacks it; an array field (per-cell readings) is one cell, its numbers joined by ";".',
        tags,
        querystring: Query({
          hours: Hours(24),
          format: Type.Union([Type.Literal('csv'), Type.Literal('ndjson')], { default: 'csv', description: 'csv or ndjson' }),
          battery_id: RecordQuery.properties.battery_id,
          source: RecordQuery.properties.source,
        }),
        response: {
          // Text, streamed: the handler answers a stream.
          200: Type.Unsafe<Readable>({
            description: 'text/csv or application/x-ndjson',
            content: { 'text/csv': { schema: { type: 'string' } }, 'application/x-ndjson': { schema: { type: 'string' } } },
          }),
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const { hours, format, battery_id, source } = request.query;
      const to = nowSeconds();
      const rows = store.exportRange(kind.name, { from: to - hours * 3600, to: to + 1, batteryId: battery_id, source });
      const name = `${kind.collection}${battery_id === undefined ? '' : `_${battery_id}`}_${hours}h.${format}`;
      reply.header('Content-Disposition', `attachment; filename="${name}"`);
      return reply.type(exportContentType[format]).send(exportBody(rows, format, columns));
    },
  );
}

/**
 * The 422 detail of a request whose records the store refused: each refused record by its index (at
 * most 100), or the whole body when the store could not say which. The store's own message stays in
 * the log: it may name hosts, databases or values.
 */
function refusalDetail(error: RecordsRefusedError, isArray: boolean): ValidationDetail[] {
  const type = 'value_error.store_refused';
  const why = REFUSAL_TEXT[error.reason];
  if (error.rows.length === 0) return [{ loc: ['body'], msg: `the store refused ${isArray ? 'these records' : 'this record'}: ${why}`, type }];
  return error.rows.slice(0, 100).map((row) => ({ loc: isArray ? ['body', row] : ['body'], msg: `the store refused this record: ${why}`, type }));
}

/**
 * The idempotency key of record `index` of a request: the header, the position, and a digest of the
 * record as validated. A retry (the same records again) finds its keys stored and stores nothing
 * twice. A key reused for other records used to answer the first request's ids and store nothing:
 * a 200 for records that were dropped, found by schemathesis as a created record that GET cannot
 * find. With the digest they are a request of their own, and stored.
 */
function recordKey(header: string, index: number, input: RecordInput): string {
  // Sorted fields: a retry that spells the same record with its fields in another order is the same record.
  const canonical = JSON.stringify(Object.keys(input).sort().map((field) => [field, input[field]]));
  return `${header}:${index}:${createHash('sha256').update(canonical).digest('base64url').slice(0, 22)}`;
}
