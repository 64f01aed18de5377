/**
 * API keys and the dashboard's session. With API_KEY set every write needs it; with READ_API_KEY set
 * every read needs one of the two keys, or the signed session cookie the dashboard gets from
 * POST /api/session (a browser's EventSource cannot send a key header). Keys come in X-API-Key or
 * Authorization: Bearer, are compared in constant time, and are never logged (the logger never
 * sees request headers or bodies).
 */
import { createHash, scryptSync, timingSafeEqual } from 'node:crypto';
import { Signer } from '@fastify/cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';

export interface KeySettings {
  apiKey?: string | undefined;
  readApiKey?: string | undefined;
}

/** The session cookie's name. Not `__Host-`: that prefix needs Secure, which plain-http installs cannot set. */
export const SESSION_COOKIE = 'battery_session';
/** A session lasts a working shift; a stolen cookie stops working after at most this long. */
export const SESSION_TTL_SECONDS = 12 * 60 * 60;

const digest = (value: string) => createHash('sha256').update(value).digest();

/** Equal-length digests make the comparison take the same time whatever the key's length. */
function matches(presented: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(presented), expected);
}

/** Digests of the keys that grant the access, each checked every time (see `anyMatches`). */
export function acceptedKeys(settings: KeySettings, access: Access): Buffer[] {
  const writeKey = settings.apiKey === undefined ? undefined : digest(settings.apiKey);
  const readKey = settings.readApiKey === undefined ? undefined : digest(settings.readApiKey);
  return access === 'write'
    ? [writeKey].filter((key) => key !== undefined)
    : access === 'read' && readKey !== undefined
      ? [readKey, writeKey].filter((key) => key !== undefined)
      : [];
}

/** Checks every accepted key so the time taken does not tell which one matched. */
export function anyMatches(presented: string, accepted: readonly Buffer[]): boolean {
  return accepted.map((expected) => matches(presented, expected)).includes(true);
}

function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key'];
  if (typeof header === 'string' && header !== '') return header;
  const authorization = request.headers.authorization;
  if (authorization?.startsWith('Bearer ')) return authorization.slice('Bearer '.length).trim();
  return undefined;
}

const signers = new WeakMap<KeySettings, Signer | null>();

/**
 * The signer of session cookies, or undefined while reads are open (no READ_API_KEY: nothing to
 * sign in to). Its secret is derived from the configured keys rather than drawn at random, so that
 * every instance behind a load balancer accepts the others' cookies, and changing either key
 * signs everyone out. scrypt, not a plain hash: a cookie carries an HMAC under this secret, and a
 * slow derivation keeps that from being a cheap offline test of guessed keys. Computed once per
 * settings object (about 50 ms).
 */
export function sessionSigner(settings: KeySettings): Signer | undefined {
  let signer = signers.get(settings);
  if (signer === undefined) {
    signer =
      settings.readApiKey === undefined
        ? null
        : new Signer(scryptSync(`${settings.readApiKey}\0${settings.apiKey ?? ''}`, 'battery-monitor/dashboard-session/v1', 32), 'sha256');
    signers.set(settings, signer);
  }
  return signer ?? undefined;
}

/** The cookie's value before signing: when it stops being valid, in Unix seconds. */
export const sessionValue = (expiresAt: number) => String(expiresAt);

export type SessionState = { state: 'none' } | { state: 'invalid' } | { state: 'valid'; expiresAt: number };

/**
 * What session the request's cookie holds. Routes of an encapsulated plugin registered before the
 * cookie plugin (app.ts decides the order) do not get its parsing hook: parse the header then.
 */
export function sessionOf(request: FastifyRequest, signer: Signer | undefined, now = Date.now() / 1000): SessionState {
  const header = request.headers.cookie;
  if (header === undefined || header === '') return { state: 'none' };
  const cookies = request.cookies ?? request.server.parseCookie?.(header) ?? {};
  const raw = cookies[SESSION_COOKIE];
  if (raw === undefined || raw === '') return { state: 'none' };
  if (signer === undefined) return { state: 'invalid' };
  const { valid, value } = signer.unsign(raw);
  if (!valid || value === null || !/^\d{1,12}$/.test(value)) return { state: 'invalid' };
  const expiresAt = Number(value);
  // The upper bound refuses a value signed with a longer lifetime than this build grants.
  if (expiresAt <= now || expiresAt > now + SESSION_TTL_SECONDS + 60) return { state: 'invalid' };
  return { state: 'valid', expiresAt };
}

export type Access = 'read' | 'write' | 'open';

/**
 * An onRequest hook for routes of the given access. Reads also take the session cookie; writes do
 * not: producers are programs that send a key, the dashboard never writes, and a cookie that the
 * browser attaches by itself is what cross-site request forgery abuses.
 */
export function requireKey(settings: KeySettings, access: Access) {
  const accepted = acceptedKeys(settings, access);
  const signer = access === 'read' ? sessionSigner(settings) : undefined;
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (accepted.length === 0) return;
    const key = presentedKey(request);
    if (key !== undefined) {
      if (anyMatches(key, accepted)) return;
      return refuse(reply, 'Invalid API key');
    }
    if (access === 'read') {
      const session = sessionOf(request, signer);
      if (session.state === 'valid') return;
      if (session.state === 'invalid') return refuse(reply, 'Session expired or invalid: sign in again');
      return refuse(reply, 'API key required (X-API-Key header or Authorization: Bearer; in a browser, sign in on the dashboard)');
    }
    return refuse(reply, 'API key required (X-API-Key header or Authorization: Bearer)');
  };
}

function refuse(reply: FastifyReply, detail: string) {
  return reply.code(401).header('WWW-Authenticate', 'Bearer').send({ detail });
}
