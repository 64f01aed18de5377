/**
 * Writes .env.example from the settings schema (src/config.ts). test/config.test.ts fails when the
 * checked-in file is not what this writes now: run `npm run generate` after changing a setting.
 */
import { writeFileSync } from 'node:fs';
import { envExample } from '../src/config.js';

writeFileSync(new URL('../.env.example', import.meta.url), envExample());
