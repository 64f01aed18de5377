/**
 * The pack view's Health section: the service's own estimates (GET /api/batteries/{battery_id}/health),
 * each with its 95 % interval and the capacity segments behind it, or, while it cannot be made, the
 * reason in words; and the state of health against cycles with the projection to end of life.
 */
import { memo, useMemo } from 'react';
import type { BatteryHealth, Estimate, PackSpecs, PackSpecsAnswer } from './api';
import { dateTime, hoursAndDays, num } from './format';
import { estimateText, intervalText, projectionOf, segmentsText, sohSummary, usePackHealth, useSohHistory, type PackHealth, type SohHistory } from './health';
import { HealthChart } from './HealthChart';

function EstimateTile({ name, label, estimate, digits, value, note }: { name: string; label: string; estimate: Estimate; digits: number; value?: string; note?: string }) {
  const shown = estimate.value === null ? null : (value ?? estimateText(estimate, digits));
  const interval = intervalText(estimate, digits);
  // "from 0 segments" under a reason says nothing the reason does not.
  const segments = shown === null && estimate.segments === 0 ? null : segmentsText(estimate);
  return (
    <div className={`tile estimate-tile ${shown === null ? 'tile-none' : 'tile-known'}`} data-estimate={name}>
      <div className="tile-label">{label}</div>
      {shown === null ? (
        <>
          <div className="tile-value small not-yet" data-value="">
            Not known yet
          </div>
          <div className="tile-sub reason" data-reason="">
            {estimate.reason ?? 'not estimated'}
          </div>
        </>
      ) : (
        <>
          <div className="tile-value small" data-value="">
            {shown}
          </div>
          {interval !== null ? (
            <div className="tile-sub" data-interval="">
              95 % interval: {interval}
            </div>
          ) : null}
        </>
      )}
      {segments !== null || note !== undefined ? <div className="tile-sub">{[note, segments].filter(Boolean).join(', ')}</div> : null}
    </div>
  );
}

/** Wh as the API counts them, in kWh once they pass a thousand. */
function energyText(estimate: Estimate): string | null {
  if (estimate.value === null) return null;
  return Math.abs(estimate.value) >= 1000 ? `${num(estimate.value / 1000, 1)} kWh` : `${num(estimate.value, 0)} Wh`;
}

function Throughput({ health }: { health: BatteryHealth }) {
  const rows: [string, string, Estimate, string | null][] = [
    ['ah-in', 'Charge in', health.ah_in, estimateText(health.ah_in, 1)],
    ['ah-out', 'Charge out', health.ah_out, estimateText(health.ah_out, 1)],
    ['wh-in', 'Energy in', health.wh_in, energyText(health.wh_in)],
    ['wh-out', 'Energy out', health.wh_out, energyText(health.wh_out)],
  ];
  return (
    <dl className="specs throughput" aria-label="Throughput">
      {rows.map(([name, term, estimate, text]) => (
        <div key={name} data-estimate={name}>
          <dt>{term}</dt>
          <dd data-value="">{text ?? <span className="reason">{estimate.reason ?? 'not counted'}</span>}</dd>
        </div>
      ))}
    </dl>
  );
}

const SPEC_LABELS: Record<keyof PackSpecs, (specs: PackSpecs) => string> = {
  nominal_capacity_ah: (s) => `nominal capacity ${num(s.nominal_capacity_ah, 1)} Ah`,
  end_of_life_soh: (s) => `end of life at ${num(s.end_of_life_soh, 0)} % health`,
  full_charge_voltage: (s) => `full at ${num(s.full_charge_voltage, 1)} V`,
  empty_voltage: (s) => `empty at ${num(s.empty_voltage, 1)} V`,
  cell_count: (s) => `${num(s.cell_count, 0)} cells`,
};

/** The specs the estimates use, those set for this pack alone marked (PUT /api/batteries/{battery_id}/specs). */
function SpecsInForce({ specs, answer }: { specs: PackSpecs; answer: PackSpecsAnswer | null }) {
  const own = new Set(Object.keys(answer?.overrides ?? {}));
  const parts = (Object.keys(SPEC_LABELS) as (keyof PackSpecs)[]).map((key) => `${SPEC_LABELS[key](specs)}${own.has(key) ? ' (set for this pack)' : ''}`);
  return <p className="muted small-print">Computed with {parts.join(', ')}.</p>;
}

function Counts({ health }: { health: BatteryHealth }) {
  const extras = [
    health.gaps > 0 ? `${num(health.gaps, 0)} gaps (${hoursAndDays(health.gap_seconds / 3600)}) not integrated` : null,
    health.backfill_rows > 0 ? `${num(health.backfill_rows, 0)} late readings stored but not counted` : null,
    health.rejected_segments > 0 ? `${num(health.rejected_segments, 0)} implausible segments left out` : null,
  ].filter(Boolean);
  return (
    <p className="muted small-print">
      {num(health.readings, 0)} readings taken, {num(health.anchors, 0)} times seen full or empty
      {health.data_until !== null ? `; newest reading ${dateTime(health.data_until)}` : ''}
      {extras.length > 0 ? `; ${extras.join(', ')}` : ''}.
    </p>
  );
}

const sentence = (text: string) => (/[.!?]$/.test(text) ? text : `${text}.`);

/** What the section says above its values: loading, the pack unknown, catching up, an error. */
function StatusLine({ state }: { state: PackHealth }) {
  let text: string | null = null;
  if (state.phase === 'loading') text = 'Loading…';
  else if (state.phase === 'missing') text = `No analytics for this pack: ${sentence(state.detail ?? 'the service has no record of it')} It starts with the pack's next reading.`;
  // Mostly the catch-up after a start (analytics off answers 503 too): the API's words follow.
  else if (state.phase === 'unavailable') text = `Not available yet (analytics catches up with the stored readings after a start): ${sentence(state.detail ?? 'not ready')} Retrying.`;
  else if (state.phase === 'error') text = `Could not load the health: ${sentence(state.detail ?? 'unknown error')} Retrying.`;
  return (
    <p className="muted small-print health-status" role="status" data-health-phase={state.phase}>
      {text}
    </p>
  );
}

function SohChart({ history, health }: { history: SohHistory; health: BatteryHealth }) {
  const projection = useMemo(() => projectionOf(health), [health]);
  if (history.phase === 'loading') return <p className="muted small-print">Loading the state-of-health history…</p>;
  if (history.phase === 'error') return <p className="muted small-print">Could not load the state-of-health history: {history.error}</p>;
  if (history.cycles.length === 0 && projection === null) {
    return (
      <p className="muted small-print" data-chart-empty="">
        The chart of state of health against cycles appears with the first capacity measured: {health.soh.reason ?? 'none yet'}.
      </p>
    );
  }
  return (
    <HealthChart
      id="chart-soh"
      cycles={history.cycles}
      soh={history.soh}
      projection={projection}
      endOfLife={health.specs.end_of_life_soh}
      summary={sohSummary(history, health)}
    />
  );
}

/** Memoized: the pack view renders every second for its clock; this section changes only with its fetches. */
export const HealthSection = memo(function HealthSection({ batteryId }: { batteryId: string }) {
  const state = usePackHealth(batteryId);
  const history = useSohHistory(batteryId);
  const health = state.health;
  return (
    <section aria-labelledby="health-title" className="block" data-health-section={batteryId} aria-busy={state.phase === 'loading'}>
      <h2 id="health-title">Health</h2>
      <p className="muted small-print">
        Computed by the service from this pack's readings: 95 % intervals where an estimate has one, and the capacity segments (full to empty
        or back) behind it.
      </p>
      <StatusLine state={state} />
      {health !== null ? (
        <>
          <div className="tiles">
            <EstimateTile name="soh" label="State of health" estimate={health.soh} digits={1} />
            <EstimateTile name="capacity" label="Capacity" estimate={health.capacity_ah} digits={1} note={`of ${num(health.specs.nominal_capacity_ah, 1)} Ah nominal`} />
            <EstimateTile name="cycles" label="Equivalent full cycles" estimate={health.equivalent_cycles} digits={1} value={num(health.equivalent_cycles.value, 1)} />
            <EstimateTile name="soc" label="State of charge" estimate={health.soc} digits={1} />
            <EstimateTile
              name="rul-cycles"
              label="Remaining life, cycles"
              estimate={health.rul_cycles}
              digits={0}
              note={`to ${num(health.specs.end_of_life_soh, 0)} % health`}
            />
            <EstimateTile name="rul-hours" label="Remaining life, time" estimate={health.rul_hours} digits={0} value={hoursAndDays(health.rul_hours.value)} />
          </div>
          <h3>Throughput</h3>
          <Throughput health={health} />
          <Counts health={health} />
          <SpecsInForce specs={health.specs} answer={state.specs} />
          <SohChart history={history} health={health} />
        </>
      ) : null}
    </section>
  );
});
