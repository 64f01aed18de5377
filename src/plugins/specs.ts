/** The battery specs file (BATTERY_SPECS_FILE), read and checked once, as `app.specs`. */
import fp from 'fastify-plugin';
import { loadSpecs, type BatterySpecs } from '../specs.js';

declare module 'fastify' {
  interface FastifyInstance {
    specs: BatterySpecs;
  }
}

export const specsPlugin = fp(
  async (app) => {
    app.decorate('specs', loadSpecs(app.config.batterySpecsFile));
  },
  { name: 'specs', fastify: '5.x', decorators: { fastify: ['config'] } },
);
