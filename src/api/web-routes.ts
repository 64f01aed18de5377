/** The dashboard at /: the built web app (web/dist), or a page saying how to build it. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';

export const WEB_DIST = fileURLToPath(new URL('../../web/dist/', import.meta.url));

export const webRoutes: FastifyPluginAsyncTypebox = async (app) => {
  if (existsSync(WEB_DIST)) {
    await app.register(fastifyStatic, { root: WEB_DIST, prefix: '/', wildcard: false });
    return;
  }
  app.get('/', { schema: { hide: true } }, async (request, reply) =>
    reply.type('text/html').send('<p>Battery Monitoring API. The dashboard is not built (<code>npm run build:web</code>). API docs: <a href="/docs">/docs</a>.</p>'),
  );
};
