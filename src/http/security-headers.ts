/**
 * Security headers on every answer, as helmet makes them: the dashboard, /docs and the JSON API alike.
 *
 * The Content-Security-Policy fits the built dashboard (web/dist): its own module script and
 * stylesheet, a data: URI favicon, fetches and the live stream (EventSource) to the same origin;
 * uPlot and React set inline styles from scripts, through the DOM's style properties, which CSP
 * does not govern. Swagger UI at /docs needs one thing more (DOCS_CONTENT_SECURITY_POLICY): its
 * scripts and stylesheets are files under /docs/static, its icons data: URIs, its validator badge
 * (the only outside host it would load) is off, but its logo carries a <style>. Nothing is allowed
 * from another origin, no inline script, no framing.
 *
 * Left out on purpose: `upgrade-insecure-requests`, which would make browsers ask plain-http
 * installs (a dashboard on a LAN address) for https and fail; and Strict-Transport-Security: the
 * service speaks plain http, and the TLS-terminating proxy in front of it, which knows the domain,
 * is the one to pin it.
 *
 * helmet computes the headers once, at start-up, and a synchronous hook sets them. @fastify/helmet
 * builds helmet's middleware anew for every request, which measured about 50 µs of CPU a request,
 * as much as all the rest of a small request (GET /api/session: ~55 µs without it, ~105 with it,
 * ~53 with the headers computed once); the headers never change from one request to the next.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import helmet, { type HelmetOptions } from 'helmet';

const SELF = "'self'";
const NONE = "'none'";

export const CONTENT_SECURITY_POLICY = {
  'default-src': [SELF],
  'base-uri': [SELF],
  'connect-src': [SELF],
  'font-src': [SELF],
  'form-action': [SELF],
  'frame-ancestors': [NONE],
  'img-src': [SELF, 'data:'],
  'object-src': [NONE],
  'script-src': [SELF],
  'script-src-attr': [NONE],
  'style-src': [SELF],
};

/**
 * The <style> in Swagger UI's own SVG logo, which React renders in the top bar a moment before
 * @fastify/swagger-ui swaps in its logo (an <img>). Allowed by its digest, not with 'unsafe-inline';
 * when an upgrade of Swagger UI changes it, the browser test of /docs reports the violation.
 */
const SWAGGER_LOGO_STYLE = '.logo_small_svg__cls-2{fill:#fff}.logo_small_svg__cls-3{fill:#85ea2d}';

/** The policy of /docs and its files (@fastify/swagger-ui's staticCSP): everyone's, and the logo's style. */
export const DOCS_CONTENT_SECURITY_POLICY = {
  ...CONTENT_SECURITY_POLICY,
  'style-src': [...CONTENT_SECURITY_POLICY['style-src'], `'sha256-${createHash('sha256').update(SWAGGER_LOGO_STYLE).digest('base64')}'`],
};

export const SECURITY_HEADER_OPTIONS: HelmetOptions = {
  contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY },
  // The same as frame-ancestors 'none', for browsers that predate it.
  frameguard: { action: 'deny' },
  referrerPolicy: { policy: 'no-referrer' },
  strictTransportSecurity: false,
};

/**
 * The headers helmet sets with `options`, by name. Its middleware only sets (and removes) headers
 * on the response: run once on a response that records them. The options hold no per-request
 * value (no nonce, no directive computed from the request), so every answer gets the same ones.
 */
export function securityHeaders(options: HelmetOptions = SECURITY_HEADER_OPTIONS): Record<string, string> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string) {
      headers[name.toLowerCase()] = value;
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (error?: unknown) => {
    if (error !== undefined) throw error;
  });
  return headers;
}

/** Sets the security headers on every answer, before any hook or handler runs (a later one may replace one: /docs). */
export function addSecurityHeaders(app: FastifyInstance): void {
  const headers = securityHeaders();
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(headers);
    done();
  });
}
