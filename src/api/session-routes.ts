/**
 * The dashboard's sign-in. A browser's EventSource cannot send an API key header, so with
 * READ_API_KEY set the page trades the key, once, for a session cookie that its fetches and the
 * live stream carry: HttpOnly (page scripts never see it), SameSite=Strict (other sites' requests
 * never carry it), signed with @fastify/cookie under a secret derived from the keys (auth.ts), and
 * holding its own expiry. The cookie grants reads only (see requireKey).
 *
 *   GET    /api/session  {"key_required", "signed_in", "expires_at"}: should the page ask for the key?
 *   POST   /api/session  {"key": "..."} -> 204 + Set-Cookie; 401 on a wrong key
 *   DELETE /api/session  -> 204, the cookie cleared (sign out)
 */
import fastifyCookie from '@fastify/cookie';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Ajv } from 'ajv';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { Type, type Static } from 'typebox';
import { toDetail } from '../records/validate.js';
import { acceptedKeys, anyMatches, SESSION_COOKIE, SESSION_TTL_SECONDS, sessionOf, sessionSigner, sessionValue } from './auth.js';
import { bodyErrorResponses, ErrorDetail, securityOf, ValidationErrorResponse } from './common.js';

const MAX_KEY_LENGTH = 4096;

const SignIn = Type.Object(
  {
    key: Type.String({
      minLength: 1,
      maxLength: MAX_KEY_LENGTH,
      description: 'The READ_API_KEY (or the API_KEY) the service was started with',
      example: 'my-read-key-0123',
    }),
  },
  { $id: 'SessionSignIn', title: 'SessionSignIn' },
);
type SignIn = Static<typeof SignIn>;

const SessionStatus = Type.Object(
  {
    key_required: Type.Boolean({ description: 'Reads need a key (READ_API_KEY is set): the page asks for it', example: true }),
    signed_in: Type.Boolean({ description: 'This request carries a valid session cookie', example: false }),
    expires_at: Type.Union([Type.Number({ description: 'When the session ends, Unix seconds' }), Type.Null()], {
      description: 'When the session ends (Unix seconds); null when not signed in',
      example: null,
    }),
  },
  { $id: 'SessionStatus', title: 'SessionStatus' },
);

const setCookieHeader = (description: string) => ({ 'set-cookie': { type: 'string', description } });
const noContent = (description: string, cookie: string) => ({ type: 'null', description, headers: setCookieHeader(cookie) });

// The app's validator leaves bodies to the handlers (src/app.ts); this one answers in the same 422 shape.
const validateSignIn = new Ajv({ allErrors: true, strict: false }).compile<SignIn>(SignIn);

/** The cookie goes out Secure when the browser reached us over https, directly or through a TLS-terminating proxy. */
function cameOverHttps(request: FastifyRequest): boolean {
  if (request.protocol === 'https') return true;
  // Trusting X-Forwarded-Proto here without trustProxy is safe: a forged value can only add Secure
  // to the forger's own cookie.
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return first === 'https';
}

const sessionPlugin: FastifyPluginAsyncTypebox = async (app) => {
  const signer = sessionSigner(app.config);
  // Parses cookies for every route registered after this plugin; signs with the keys' secret.
  await app.register(fastifyCookie, signer === undefined ? {} : { secret: signer });
  const readKeys = acceptedKeys(app.config, 'read');
  const tags = ['Session'];
  // Never a key: the page must be able to ask, sign in and sign out without one.
  const security = securityOf(app.config, 'open');

  const noStore = (reply: FastifyReply) => reply.header('cache-control', 'no-store');

  app.get(
    '/api/session',
    {
      schema: {
        summary: 'Does reading need a key, and is this browser signed in?',
        description: 'Open to all: the dashboard asks before it shows the sign-in form. Never needs a key.',
        tags,
        security,
        response: { 200: { ...SessionStatus, description: 'Whether reads need a key, and whether this request is signed in' } },
      },
    },
    async (request, reply) => {
      noStore(reply);
      const session = sessionOf(request, signer);
      return {
        key_required: signer !== undefined,
        signed_in: session.state === 'valid',
        expires_at: session.state === 'valid' ? session.expiresAt : null,
      };
    },
  );

  app.post(
    '/api/session',
    {
      schema: {
        summary: 'Sign in: trade the read key for a session cookie',
        description:
          `Checks the key (READ_API_KEY or API_KEY) and sets the \`${SESSION_COOKIE}\` cookie: HttpOnly, SameSite=Strict, ` +
          `Path=/, Secure over https, signed, valid ${SESSION_TTL_SECONDS / 3600} h. Reads (the records, /api/stream, ` +
          '/docs) then accept the cookie in place of the key; writes never do. Answers 409 when READ_API_KEY is not ' +
          'set: reads are open and there is nothing to sign in to.',
        tags,
        security,
        body: SignIn,
        response: {
          204: noContent('Signed in', `${SESSION_COOKIE}=<signed expiry>; Max-Age=${SESSION_TTL_SECONDS}; Path=/; HttpOnly; SameSite=Strict`),
          401: { ...ErrorDetail, description: 'The key is neither READ_API_KEY nor API_KEY' },
          409: { ...ErrorDetail, description: 'READ_API_KEY is not set: reads are open, no sign-in needed' },
          413: bodyErrorResponses[413],
          415: bodyErrorResponses[415],
          422: { ...ValidationErrorResponse, description: 'No key, or not a string' },
        },
      },
    },
    async (request, reply) => {
      noStore(reply);
      if (!validateSignIn(request.body)) {
        return reply.code(422).send({ detail: toDetail(validateSignIn.errors ?? [], ['body']) });
      }
      if (signer === undefined) {
        return reply.code(409).send({ detail: 'Reads are open (READ_API_KEY is not set): there is nothing to sign in to' });
      }
      if (!anyMatches(request.body.key, readKeys)) {
        return reply.code(401).send({ detail: 'Wrong key: enter the READ_API_KEY (or API_KEY) this service was started with' });
      }
      const expiresAt = Math.floor(Date.now() / 1000) + SESSION_TTL_SECONDS;
      return reply
        .setCookie(SESSION_COOKIE, sessionValue(expiresAt), {
          signed: true,
          httpOnly: true,
          sameSite: 'strict',
          path: '/',
          secure: cameOverHttps(request),
          maxAge: SESSION_TTL_SECONDS,
        })
        .code(204)
        .send();
    },
  );

  app.delete(
    '/api/session',
    {
      schema: {
        summary: 'Sign out: clear the session cookie',
        description: 'Always succeeds, signed in or not. Never needs a key.',
        tags,
        security,
        response: { 204: noContent('Signed out', `${SESSION_COOKIE}=; Max-Age=0; Path=/ (clears the cookie)`) },
      },
    },
    async (request, reply) => {
      noStore(reply);
      return reply
        .clearCookie(SESSION_COOKIE, { httpOnly: true, sameSite: 'strict', path: '/', secure: cameOverHttps(request) })
        .code(204)
        .send();
    },
  );
};

/** Not encapsulated, so the cookie parsing of @fastify/cookie serves every route registered after it. */
export const sessionRoutes = fp(sessionPlugin, { name: 'session-routes', fastify: '5.x' });
