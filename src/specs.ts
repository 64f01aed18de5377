/**
 * The battery specs file (BATTERY_SPECS_FILE): the pack's specifications and the monitoring
 * thresholds that /api/dashboard serves and the dashboard colours by. Read and checked once at start.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { Type, type Static } from 'typebox';
import { ConfigError } from './config.js';

const Band = Type.Object({ min: Type.Number(), max: Type.Number(), critical_low: Type.Number(), critical_high: Type.Number() });

export const BatterySpecsFile = Type.Object({
  battery_specifications: Type.Object({
    nominal_capacity_ah: Type.Number({ example: 75 }),
    nominal_voltage: Type.Number({ example: 400 }),
    max_cycles: Type.Number({ example: 3000 }),
    max_temp: Type.Number({ example: 60 }),
    min_temp: Type.Number({ example: -20 }),
    max_current: Type.Number({ example: 300 }),
    chemistry: Type.String({ example: 'NMC' }),
    cell_configuration: Type.String({ example: '108s2p' }),
    rated_power: Type.Number({ example: 30 }),
  }),
  monitoring_thresholds: Type.Object({
    voltage: Band,
    current: Band,
    temperature: Band,
    health: Type.Object({ min: Type.Number(), warning: Type.Number(), critical: Type.Number() }),
  }),
});
export type BatterySpecs = Static<typeof BatterySpecsFile>;

export function loadSpecs(file: string): BatterySpecs {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError(`BATTERY_SPECS_FILE: cannot read ${file}: ${(error as Error).message}`);
  }
  const validate = new Ajv({ allErrors: true, strict: false }).compile(BatterySpecsFile);
  if (!validate(parsed)) {
    const first = validate.errors?.[0];
    throw new ConfigError(`BATTERY_SPECS_FILE: ${file}: ${first?.instancePath || '/'} ${first?.message ?? 'is invalid'}`);
  }
  return parsed as BatterySpecs;
}
