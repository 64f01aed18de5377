/**
 * Per-pack specifications for analytics: defaults from the battery specs file, overridden per pack
 * through PUT /api/batteries/{battery_id}/specs. The specs file names no full-charge or empty
 * voltage: they are derived from its cell configuration (the series count of "108s2p") and its
 * chemistry, per cell: LFP 3.45 V full, 2.9 V empty; other lithium-ion chemistries (NMC, NCA, LCO)
 * 4.1 V and 3.0 V.
 */
import type { BatterySpecs } from '../specs.js';
import type { PackSpecs } from './pack-state.js';

export type SpecOverrides = Partial<PackSpecs>;

export const SPEC_FIELDS = ['nominal_capacity_ah', 'cell_count', 'full_charge_voltage', 'empty_voltage', 'end_of_life_soh'] as const;

const PER_CELL = {
  lfp: { full: 3.45, empty: 2.9 },
  other: { full: 4.1, empty: 3.0 },
};

/** The series cell count of a configuration such as "108s2p"; undefined when it names none. */
export function seriesCells(configuration: string): number | undefined {
  const match = /(\d+)\s*s/i.exec(configuration);
  const count = match === null ? NaN : Number(match[1]);
  return Number.isInteger(count) && count > 0 ? count : undefined;
}

/** Defaults of every pack, from the specs file; `endOfLifeSoh` from the plugin's option (ANALYTICS_END_OF_LIFE). */
export function defaultSpecs(file: BatterySpecs, endOfLifeSoh: number): PackSpecs {
  const specs = file.battery_specifications;
  const lfp = /LFP|LiFePO4/i.test(specs.chemistry);
  const perCell = lfp ? PER_CELL.lfp : PER_CELL.other;
  // Without a series count, the nominal voltage over a nominal cell voltage (3.2 V LFP, 3.7 V others).
  const cells = seriesCells(specs.cell_configuration) ?? Math.max(1, Math.round(specs.nominal_voltage / (lfp ? 3.2 : 3.7)));
  return {
    nominal_capacity_ah: specs.nominal_capacity_ah,
    cell_count: cells,
    full_charge_voltage: round(cells * perCell.full),
    empty_voltage: round(cells * perCell.empty),
    end_of_life_soh: endOfLifeSoh,
  };
}

const round = (value: number) => Math.round(value * 1000) / 1000;

/**
 * A pack's specs: its overrides over the defaults. A new cell count without new voltages scales the
 * default voltages with it (they are per cell).
 */
export function effectiveSpecs(defaults: PackSpecs, overrides: SpecOverrides | undefined): PackSpecs {
  if (overrides === undefined) return defaults;
  const cells = overrides.cell_count ?? defaults.cell_count;
  const scale = cells / defaults.cell_count;
  return {
    nominal_capacity_ah: overrides.nominal_capacity_ah ?? defaults.nominal_capacity_ah,
    cell_count: cells,
    full_charge_voltage: overrides.full_charge_voltage ?? round(defaults.full_charge_voltage * scale),
    empty_voltage: overrides.empty_voltage ?? round(defaults.empty_voltage * scale),
    end_of_life_soh: overrides.end_of_life_soh ?? defaults.end_of_life_soh,
  };
}
