/** /api/batteries/{battery_id}/health and /api/batteries/{battery_id}/specs. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';

export const analyticsRoutes: FastifyPluginAsyncTypebox = async () => {};
