/** Records made of the kinds table's own examples: one per kind, every field a producer sends. */
import { inputFields, type KindName, type RecordInput } from '../../src/records/kinds.js';

export function exampleInput(kind: KindName): RecordInput {
  return Object.fromEntries(inputFields(kind).map((field) => [field.name, field.example]));
}
