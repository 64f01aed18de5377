/**
 * SubmitOptions.existing, by which the v2 listener counts collector_v2_duplicates_total: the ingest
 * sink tells a submitter which rows of its batch the store held already by their idempotency keys,
 * before the submission settles, on the real SQLite store. When the store refused records of the
 * batch and the sink wrote the others again in parts, the rows it tells are still the submitted
 * batch's, not a part's.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecordsRefusedError } from '../../src/ingest/record-sink.js';
import { StoreSink } from '../../src/ingest/store-sink.js';
import { batchOf, data, type TestRecord } from '../store/conformance.js';
import { instrumentedStore, refuseWhere } from '../ingest/helpers.js';

const NOW = 1_732_700_000;
const keyed = (rows: readonly TestRecord[]) => rows.map((row, i) => ({ ...row, key: `v2:test:${i}` }));

/** Submits `rows` as a device's batch, after storing the rows `held` alone; answers what `existing` was told and how the submission settled. */
async function submitWithHeld(refusal: { table: string; when: string }, rows: readonly TestRecord[], held: readonly number[]) {
  const { store, file } = await instrumentedStore();
  const sink = new StoreSink(store);
  try {
    await sink.submit(batchOf('battery-data', held.map((row) => rows[row]!)));
    refuseWhere(file, refusal.table, refusal.when);
    const told: number[][] = [];
    let settled = false;
    const outcome = await sink
      .submit(batchOf('battery-data', rows), {
        retryUntil: new AbortController().signal,
        atomic: false,
        existing: (found) => {
          assert.equal(settled, false, 'told after the submission settled');
          told.push([...found]);
        },
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      )
      .finally(() => (settled = true));
    return { told: told.flat().sort((a, b) => a - b), outcome };
  } finally {
    await sink.close();
    await store.close();
  }
}

describe('the ingest sink tells a submitter which rows the store held already (SubmitOptions.existing)', () => {
  it('the rows of the submitted batch, in a batch stored whole', async () => {
    const rows = keyed(Array.from({ length: 6 }, (_, i) => data(NOW + i, 'pack-e', 400 + i)));
    const { told, outcome } = await submitWithHeld({ table: 'battery_data', when: "NEW.source = 'never'" }, rows, [1, 4]);
    assert.equal(outcome, undefined);
    assert.deepEqual(told, [1, 4]);
  });

  it("the submitted batch's rows when refused records split it in parts the store named", async () => {
    const rows = keyed(Array.from({ length: 10 }, (_, i) => data(NOW + i, 'pack-e', 400 + i, i === 3 || i === 7 ? { source: 'poison' } : {})));
    const { told, outcome } = await submitWithHeld({ table: 'battery_data', when: "NEW.source = 'poison'" }, rows, [1, 5, 8]);
    assert.ok(outcome instanceof RecordsRefusedError, String(outcome));
    assert.deepEqual(outcome.rows, [3, 7]);
    assert.deepEqual(told, [1, 5, 8]);
  });

  it("the submitted batch's rows when halves of halves were written alone (the store named no row)", async () => {
    const rows = keyed(Array.from({ length: 8 }, (_, i) => data(NOW + i, i === 5 ? 'pack-poison' : 'pack-e', 400 + i)));
    const { told, outcome } = await submitWithHeld({ table: 'battery_data_rollup_60', when: "NEW.battery_id = 'pack-poison'" }, rows, [1, 6, 7]);
    assert.ok(outcome instanceof RecordsRefusedError, String(outcome));
    assert.deepEqual(outcome.rows, [5]);
    assert.deepEqual(told, [1, 6, 7]);
  });
});
