/**
 * The default rules, from the battery specs file's monitoring_thresholds and NO_DATA_SECONDS, and
 * what an edit of a rule means for its open alarms.
 *
 * Defaults have stable ids (`voltage`, `temperature`, …). They are created at first start; while one
 * has not been edited through the API it follows the specs file and NO_DATA_SECONDS at every start.
 * A default that was deleted is not created again.
 */
import type { BatterySpecs } from '../specs.js';
import { CELL_VOLTAGE_DELTA, DEFAULT_WINDOW_SECONDS, MAX_SILENCE_SECONDS } from './schemas.js';
import type { AlarmRule, Band, RuleSettings } from './model.js';

export type DefaultRule = RuleSettings & { id: string };

/** Two significant digits: a hysteresis of 2.2 V reads better than 2.2000000000000002. */
const round2 = (value: number) => Number(value.toPrecision(2));

/**
 * A two-sided band from the specs file: warning outside min..max, critical outside
 * critical_low..critical_high; the hysteresis 2 % of the normal range.
 */
function bandRule(
  id: string,
  name: string,
  field: string,
  band: { min: number; max: number; critical_low: number; critical_high: number },
  debounceSeconds = 0,
): DefaultRule {
  return {
    id,
    name,
    type: 'threshold',
    kind: 'battery-data',
    field,
    warning: { below: band.min, above: band.max },
    critical: { below: band.critical_low, above: band.critical_high },
    hysteresis: round2(Math.abs(band.max - band.min) * 0.02),
    debounce_seconds: debounceSeconds,
    window_seconds: null,
    battery_id: null,
    enabled: true,
  };
}

export function defaultRules(specs: BatterySpecs, noDataSeconds: number): DefaultRule[] {
  const { voltage, current, temperature, health } = specs.monitoring_thresholds;
  const rule = (id: string, settings: Omit<RuleSettings, 'battery_id' | 'enabled'>): DefaultRule => ({ id, ...settings, battery_id: null, enabled: true });
  return [
    bandRule('voltage', 'Pack voltage', 'pack_voltage', voltage),
    // Inrush and regenerative-braking peaks last a moment: a current past its level must last 5 s.
    bandRule('current', 'Pack current', 'pack_current', current, 5),
    bandRule('temperature', 'Cell temperature', 'cell_temp', temperature),
    rule('health', {
      name: 'State of health',
      type: 'threshold',
      kind: 'battery-performance',
      field: 'health_score',
      warning: { below: health.warning },
      critical: { below: health.critical },
      hysteresis: round2(Math.abs(health.warning - health.critical) * 0.05) || 1,
      debounce_seconds: 0,
      window_seconds: null,
    }),
    rule('no-data', {
      name: 'No data',
      type: 'no_data',
      kind: 'battery-data',
      field: null,
      warning: { above: noDataSeconds },
      // Ten times as long: a pack that is late, then one that is gone.
      critical: { above: Math.min(noDataSeconds * 10, MAX_SILENCE_SECONDS) },
      hysteresis: 0,
      debounce_seconds: 0,
      window_seconds: null,
    }),
    rule('temperature-rise', {
      name: 'Cell temperature rising',
      type: 'rate_of_rise',
      kind: 'battery-data',
      field: 'cell_temp',
      // °C per minute over a minute: a pack whose cooling failed climbs about 6 °C/min (the simulator's overheating scenario).
      warning: { above: 2 },
      critical: { above: 5 },
      hysteresis: 0.5,
      debounce_seconds: 0,
      window_seconds: DEFAULT_WINDOW_SECONDS,
    }),
    rule('cell-imbalance', {
      name: 'Cell imbalance',
      type: 'cell_imbalance',
      kind: 'battery-data',
      field: CELL_VOLTAGE_DELTA,
      // Volts between the highest and the lowest cell.
      warning: { above: 0.05 },
      critical: { above: 0.1 },
      hysteresis: 0.01,
      debounce_seconds: 10,
      window_seconds: null,
    }),
  ];
}

export function newRule(id: string, settings: RuleSettings, now: number, builtin = false): AlarmRule {
  return { id, ...settings, builtin, customized: false, created_at: now, updated_at: now };
}

const sameBand = (a: Band | null, b: Band | null) => a?.above === b?.above && a?.below === b?.below && (a === null) === (b === null);

/** Whether the settings differ in anything but the name. */
export function sameSettings(a: RuleSettings, b: RuleSettings): boolean {
  return (
    a.type === b.type &&
    a.kind === b.kind &&
    a.field === b.field &&
    sameBand(a.warning, b.warning) &&
    sameBand(a.critical, b.critical) &&
    a.hysteresis === b.hysteresis &&
    a.debounce_seconds === b.debounce_seconds &&
    a.window_seconds === b.window_seconds &&
    a.battery_id === b.battery_id &&
    a.enabled === b.enabled
  );
}

/**
 * What an edit does to the rule's open alarms and evaluation state:
 * - `clear`: it judges something else now (type, kind, field) or nothing (disabled): its open alarms
 *   clear and its state starts over;
 * - `rescope`: it watches other packs: alarms of packs it no longer watches clear;
 * - `restartWindow`: rate_of_rise over another window: the readings gathered so far no longer fit;
 * - none of them: new levels, hysteresis or debounce apply from the next reading; open alarms stay.
 */
export function editEffect(before: RuleSettings, after: RuleSettings): { clear: boolean; rescope: boolean; restartWindow: boolean } {
  const clear = before.type !== after.type || before.kind !== after.kind || before.field !== after.field || !after.enabled;
  return {
    clear,
    rescope: !clear && before.battery_id !== after.battery_id,
    restartWindow: !clear && before.window_seconds !== after.window_seconds,
  };
}

/** Whether the rule judges this pack. */
export const watches = (rule: Pick<RuleSettings, 'battery_id'>, batteryId: string) => rule.battery_id === null || rule.battery_id === batteryId;
