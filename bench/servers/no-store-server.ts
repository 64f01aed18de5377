/**
 * The ceiling for single POSTs: the same Fastify instance settings, the same body parsing (depth-
 * limited), security headers, body validation and record building as the real route, but no store. Prints its URL as one line, then serves.
 */
import Fastify from 'fastify';
import { BODY_LIMIT } from '../../src/app.js';
import { useLimitedJsonParser } from '../../src/http/json-body.js';
import { addSecurityHeaders } from '../../src/http/security-headers.js';
import { RecordBatch } from '../../src/ingest/record-batch.js';
import { validateBody } from '../../src/records/validate.js';

const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT });
useLimitedJsonParser(app);
addSecurityHeaders(app);
app.post('/api/battery-data', async (request, reply) => {
  const result = validateBody('battery-data', request.body);
  if (!result.ok) return reply.code(422).send({ detail: result.detail });
  const now = Date.now() / 1000;
  const batch = new RecordBatch('battery-data', result.records.length);
  for (const input of result.records) batch.append(input, now);
  return { message: 'Battery data stored successfully', id: String(batch.length), count: batch.length };
});
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ msg: 'battery monitor API listening', url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}` })}\n`);
