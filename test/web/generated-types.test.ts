/**
 * The dashboard's record types are generated from the server's schemas (scripts/generate-web-types.ts).
 * This fails when the checked-in file is not what the generator writes from today's kinds table, so
 * a field added on the server cannot be missing in the web's types.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { GENERATED_FILE, generateWebTypes } from '../../scripts/generate-web-types.js';
import { ALL_KINDS } from '../../src/records/kinds.js';

it('web/src/generated/records.ts is what the generator writes from the kinds table (npm run generate)', async () => {
  assert.equal(readFileSync(GENERATED_FILE, 'utf8'), await generateWebTypes());
});

it('declares every kind and every field of each kind', async () => {
  const generated = await generateWebTypes();
  for (const kind of ALL_KINDS) {
    assert.match(generated, new RegExp(`'${kind.name}': ${kind.title};`));
    const body = new RegExp(`export interface ${kind.title} \\{([^]*?)\\n\\}`).exec(generated)?.[1] ?? '';
    for (const field of Object.keys(kind.fields)) assert.match(body, new RegExp(`\\n  ${field}: number;`), `${kind.title}.${field}`);
  }
});

it('makes one type of a schema several answers share (Estimate, PackSpecs), not numbered copies', async () => {
  const generated = await generateWebTypes();
  assert.match(generated, /\n  soh: Estimate;/);
  assert.doesNotMatch(generated, /export interface (Estimate|PackSpecs)\d/);
});
