/** Records made of the kinds table's own examples: one per kind, every field a producer sends. */
import { inputFields, type KindName, type RecordInput } from '../../src/records/kinds.js';

export function exampleInput(kind: KindName): RecordInput {
  return Object.fromEntries(inputFields(kind).map((field) => [field.name, field.example]));
}

/**
 * What the server derives from a record's per-cell readings, worked out here by hand (not with the
 * kinds table's reducers): the fields a stored battery-data record gains, none without cells.
 */
export function expectedDerived(input: RecordInput): RecordInput {
  const derived: RecordInput = {};
  const voltages = input.cell_voltages as readonly number[] | undefined;
  const temps = input.cell_temps as readonly number[] | undefined;
  if (voltages !== undefined && voltages.length > 0) {
    derived.cell_voltage_min = Math.min(...voltages);
    derived.cell_voltage_max = Math.max(...voltages);
    derived.cell_voltage_delta = Math.max(...voltages) - Math.min(...voltages);
  }
  if (temps !== undefined && temps.length > 0) derived.cell_temp_max = Math.max(...temps);
  return derived;
}
