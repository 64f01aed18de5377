/**
 * The pack view's Cells section: the cell voltages and temperatures of the pack's latest battery-data
 * record, as bars with the outliers marked (cells.ts says what an outlier is). The record is the
 * fleet's, so a new reading from the live feed redraws it; a latest record without cells hides it.
 */
import { memo, useMemo } from 'react';
import type { DataRecord } from './api';
import { CellChart } from './CellChart';
import { CELL_TEMPERATURE, CELL_VOLTAGE, cellStats } from './cells';
import { dateTime } from './format';

/** Memoized: the pack view renders every second for its clock; this section changes only with the record. */
export const CellsSection = memo(function CellsSection({ record }: { record: DataRecord | null }) {
  const voltages = record?.cell_voltages;
  const temps = record?.cell_temps;
  const voltageStats = useMemo(() => (voltages && voltages.length > 0 ? cellStats(voltages, CELL_VOLTAGE) : null), [voltages]);
  const tempStats = useMemo(() => (temps && temps.length > 0 ? cellStats(temps, CELL_TEMPERATURE) : null), [temps]);
  if (record === null || (voltageStats === null && tempStats === null)) return null;
  return (
    <section aria-labelledby="cells-title" className="block" data-cells-section={record.battery_id}>
      <h2 id="cells-title">Cells</h2>
      <p className="muted small-print" data-cells-time={record.timestamp}>
        From the latest reading, of {dateTime(record.timestamp)}.
      </p>
      <div className="cell-charts">
        {voltageStats !== null ? <CellChart id="chart-cell-voltages" stats={voltageStats} quantity={CELL_VOLTAGE} /> : null}
        {tempStats !== null ? <CellChart id="chart-cell-temps" stats={tempStats} quantity={CELL_TEMPERATURE} /> : null}
      </div>
    </section>
  );
});
