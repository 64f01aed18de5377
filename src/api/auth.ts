/**
 * API keys. With API_KEY set every write needs it; with READ_API_KEY set every read needs one of the
 * two keys. Keys come in X-API-Key or Authorization: Bearer, are compared in constant time, and are
 * never logged (the logger never sees request headers).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

export interface KeySettings {
  apiKey: string | undefined;
  readApiKey: string | undefined;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

/** Equal-length digests make the comparison take the same time whatever the key's length. */
function matches(presented: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(presented), expected);
}

function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key'];
  if (typeof header === 'string' && header !== '') return header;
  const authorization = request.headers.authorization;
  if (authorization?.startsWith('Bearer ')) return authorization.slice('Bearer '.length).trim();
  return undefined;
}

export type Access = 'read' | 'write' | 'open';

/** An onRequest hook for routes of the given access. */
export function requireKey(settings: KeySettings, access: Access) {
  const writeKey = settings.apiKey === undefined ? undefined : digest(settings.apiKey);
  const readKey = settings.readApiKey === undefined ? undefined : digest(settings.readApiKey);
  const accepted =
    access === 'write'
      ? [writeKey].filter((key) => key !== undefined)
      : access === 'read' && readKey !== undefined
        ? [readKey, writeKey].filter((key) => key !== undefined)
        : [];
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (accepted.length === 0) return;
    const key = presentedKey(request);
    // Check every accepted key so the time taken does not tell which one matched.
    const ok = key !== undefined && accepted.map((expected) => matches(key, expected)).includes(true);
    if (!ok) {
      return reply
        .code(401)
        .header('WWW-Authenticate', 'Bearer')
        .send({ detail: key === undefined ? 'API key required (X-API-Key header or Authorization: Bearer)' : 'Invalid API key' });
    }
  };
}
