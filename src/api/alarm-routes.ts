/** /api/alarm-rules and /api/alarms. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';

export const alarmRoutes: FastifyPluginAsyncTypebox = async () => {};
