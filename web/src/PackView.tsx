import { useEffect, useMemo, useState } from 'react';
import { exportUrl, fetchAlarms, type Alarm, type Limits, type Specs, type Thresholds } from './api';
import { SeverityBadge } from './AlarmsView';
import { CellsSection } from './CellsSection';
import { EmptyState } from './EmptyState';
import type { PackState } from './fleet';
import { ago, dateTime, num } from './format';
import { HealthSection } from './HealthSection';
import { RANGES, packHref, useAlarms, useFleet, useNow, type RangeKey } from './hooks';
import { useReadings, useTrend, type DataField, type Readings } from './series';
import { Sparkline } from './Sparkline';
import { StatusBadge } from './StatusBadge';
import { healthLevel, isStale, levelOf, packStatus, type Level } from './status';
import { TimeChart, type AlarmPeriod, type ChartData } from './TimeChart';

const CHARTS: { field: DataField; title: string; unit: string; color: string; limits: keyof Omit<Thresholds, 'health'> }[] = [
  { field: 'pack_voltage', title: 'Pack voltage', unit: 'V', color: '#1d4ed8', limits: 'voltage' },
  { field: 'pack_current', title: 'Pack current', unit: 'A', color: '#7c3aed', limits: 'current' },
  { field: 'cell_temp', title: 'Cell temperature', unit: '°C', color: '#c2410c', limits: 'temperature' },
];

/**
 * The pack's alarms open at some moment of the range (GET /api/alarms?battery_id=&since=), fetched
 * again whenever the open alarms change (live) or the range does.
 */
function usePackAlarms(id: string, hours: number, clockOffset: number): Alarm[] {
  const { version } = useAlarms();
  const [alarms, setAlarms] = useState<Alarm[]>([]);
  useEffect(() => {
    const controller = new AbortController();
    const since = Math.max(0, Math.floor(Date.now() / 1000 - clockOffset - hours * 3600));
    fetchAlarms({ battery_id: id, since, state: 'all', limit: 1000 }, controller.signal).then(setAlarms, () => undefined);
    return () => controller.abort();
  }, [id, hours, clockOffset, version]);
  return alarms;
}

/** An alarm goes on the chart of the field it judges; one judging no field (no data) on every chart. */
const periodsOf = (alarms: readonly Alarm[], field: string): AlarmPeriod[] =>
  alarms
    .filter((alarm) => alarm.field === null || alarm.field === field)
    .map((alarm) => ({ from: alarm.raised_at, to: alarm.cleared_at, severity: alarm.peak_severity }));

function periodSummary(periods: readonly AlarmPeriod[]): string {
  if (periods.length === 0) return '';
  const open = periods.filter((period) => period.to === null).length;
  return ` ${periods.length} alarm ${periods.length === 1 ? 'period' : 'periods'} in the range (shaded)${open > 0 ? `, ${open} still open` : ''}.`;
}

function PackAlarmsList({ alarms }: { alarms: readonly Alarm[] }) {
  if (alarms.length === 0) return <p className="muted">No alarms in this range.</p>;
  return (
    <ul className="pack-alarms" aria-label="Alarms in the range">
      {alarms.map((alarm) => (
        <li key={alarm.id} data-alarm={alarm.id} data-state={alarm.state}>
          <SeverityBadge severity={alarm.peak_severity} /> {alarm.rule_name}: raised {dateTime(alarm.raised_at)}
          {alarm.cleared_at === null ? `, ${alarm.state === 'acknowledged' ? 'acknowledged' : 'open'}` : `, cleared ${dateTime(alarm.cleared_at)}`}
        </li>
      ))}
    </ul>
  );
}

function LiveTile({
  label,
  value,
  unit,
  level,
  limits,
  field,
}: {
  label: string;
  value: number | undefined;
  unit: string;
  level: Level | undefined;
  limits?: Limits;
  field: string;
}) {
  return (
    <div className={`tile tile-${level ?? 'none'}`}>
      <div className="tile-label">{label}</div>
      <div className="tile-value" data-live={field}>
        {value === undefined ? '—' : num(value, 1)}
        <span className="unit"> {unit}</span>
      </div>
      {level && level !== 'normal' ? <div className={`tile-level level-${level}`}>{level === 'critical' ? 'Critical' : 'Warning'}</div> : null}
      {limits ? (
        <div className="tile-sub">
          normal {limits.min} to {limits.max} {unit}
        </div>
      ) : null}
    </div>
  );
}

function trendText(values: number[], hoursLabel: string, digits: number): string {
  if (values.length < 2) return 'no trend yet';
  const delta = (values.at(-1) as number) - (values[0] as number);
  if (Math.abs(delta) < 10 ** -digits / 2) return `steady over ${hoursLabel}`;
  return `${delta > 0 ? '▲ +' : '▼ −'}${num(Math.abs(delta), digits)} over ${hoursLabel}`;
}

function TrendTile({
  label,
  value,
  xs,
  ys,
  digits,
  window,
  level,
  field,
  extra,
}: {
  label: string;
  value: string;
  xs: number[];
  ys: number[];
  digits: number;
  window: string;
  level?: Level;
  field: string;
  extra?: string;
}) {
  const trend = trendText(ys, window, digits);
  return (
    <div className={`tile trend-tile tile-${level ?? 'none'}`}>
      <div className="tile-label">{label}</div>
      <div className="tile-value small" data-live={field}>
        {value}
      </div>
      {extra ? <div className="tile-sub">{extra}</div> : null}
      <div className="trend">
        <Sparkline xs={xs} ys={ys} label={`${label} trend: ${trend}`} />
        <div className="tile-sub">{trend}</div>
      </div>
    </div>
  );
}

function chartData(readings: Readings, field: DataField): ChartData {
  return {
    x: readings.x,
    mean: readings.mean[field],
    min: readings.min ? readings.min[field] : null,
    max: readings.max ? readings.max[field] : null,
  };
}

function chartSummary(readings: Readings, field: DataField, unit: string, rangeLabel: string): string {
  const values = readings.mean[field];
  if (values.length === 0) return `No readings in the last ${rangeLabel}.`;
  const lo = Math.min(...(readings.min ? readings.min[field] : values));
  const hi = Math.max(...(readings.max ? readings.max[field] : values));
  const n = readings.counts.reduce((a, b) => a + b, 0);
  return `Last ${rangeLabel}: ${n} readings, from ${num(lo)} to ${num(hi)} ${unit}, most recent ${num(values.at(-1))} ${unit}.`;
}

function SpecsList({ specs }: { specs: Specs }) {
  const rows: [string, string][] = [
    ['Chemistry', specs.chemistry],
    ['Cell configuration', specs.cell_configuration],
    ['Nominal capacity', `${num(specs.nominal_capacity_ah, 1)} Ah`],
    ['Nominal voltage', `${num(specs.nominal_voltage, 0)} V`],
    ['Rated power', `${num(specs.rated_power, 1)} kW`],
    ['Max current', `${num(specs.max_current, 0)} A`],
    ['Temperature range', `${num(specs.min_temp, 0)} to ${num(specs.max_temp, 0)} °C`],
    ['Rated cycles', num(specs.max_cycles, 0)],
  ];
  return (
    <dl className="specs">
      {rows.map(([term, value]) => (
        <div key={term}>
          <dt>{term}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export function PackView({ id, rangeKey }: { id: string; rangeKey: RangeKey }) {
  const fleet = useFleet();
  const now = useNow() - fleet.clockOffset;
  const [fitLimits, setFitLimits] = useState(false);
  const range = RANGES[rangeKey];
  const readings = useReadings(id, rangeKey, fleet.clockOffset);
  const trendHours = Math.max(range.hours, 24);
  const trendWindow = trendHours === range.hours ? range.label : '24 h';
  const performance = useTrend('battery-performance', id, trendHours);
  const prediction = useTrend('battery-prediction', id, trendHours);
  const packAlarms = usePackAlarms(id, range.hours, fleet.clockOffset);
  const periods = useMemo(() => Object.fromEntries(CHARTS.map((chart) => [chart.field, periodsOf(packAlarms, chart.field)])), [packAlarms]);

  const pack: PackState | undefined = fleet.packs.get(id);
  const dashboard = fleet.dashboard;
  const thresholds = dashboard?.thresholds;
  const version = readings.version;
  const charts = useMemo(() => CHARTS.map((chart) => chartData(readings, chart.field)), [version]); // eslint-disable-line react-hooks/exhaustive-deps

  if (fleet.phase === 'loading' || !thresholds || !dashboard) {
    return (
      <section aria-busy="true">
        <h1 tabIndex={-1}>{id}</h1>
        <p className="muted">Loading…</p>
      </section>
    );
  }

  if (!pack) {
    return (
      <section>
        <p className="crumbs">
          <a href="#/">← All packs</a>
        </p>
        <h1 tabIndex={-1}>{id}</h1>
        <EmptyState batteryId={id} />
      </section>
    );
  }

  const data = pack.data;
  const perf = pack.performance;
  const pred = pack.prediction;
  const status = packStatus(data, perf, thresholds);
  const stale = isStale(pack.lastHeard, now);
  const hoursParam = range.hours;
  const perfRecords = performance.records;
  const predRecords = prediction.records;
  const perfX = perfRecords.map((r) => r.timestamp);
  const predX = predRecords.map((r) => r.timestamp);
  // The newest point may be a moment ahead of the ticking clock (or in a bucket that ends later).
  const end = Math.max(now, readings.x.at(-1) ?? now);
  const xRange: [number, number] = [end - range.hours * 3600, end];

  return (
    <article aria-labelledby="pack-title" data-pack-view={id}>
      <p className="crumbs">
        <a href="#/">← All packs</a>
      </p>
      <div className="view-head">
        <h1 id="pack-title" tabIndex={-1}>
          {id}
        </h1>
        <div aria-live="polite" className="pack-status">
          <StatusBadge level={status.level} stale={stale} />
        </div>
        <span className={`muted${stale ? ' stale-text' : ''}`}>
          {pack.lastHeard === undefined ? 'never heard from' : `last heard ${ago(now - pack.lastHeard)}`}
        </span>
      </div>
      {status.findings.length > 0 ? (
        <ul className="findings" aria-label="Alerts">
          {status.findings.map((finding) => (
            <li key={finding.metric} className={`finding-${finding.level}`}>
              {finding.text}
            </li>
          ))}
        </ul>
      ) : null}

      <section aria-labelledby="live-title" className="block">
        <h2 id="live-title">Live values</h2>
        <div className="tiles">
          <LiveTile
            field="voltage"
            label="Pack voltage"
            value={data?.pack_voltage}
            unit="V"
            level={data ? levelOf(data.pack_voltage, thresholds.voltage) : undefined}
            limits={thresholds.voltage}
          />
          <LiveTile
            field="current"
            label="Pack current"
            value={data?.pack_current}
            unit="A"
            level={data ? levelOf(data.pack_current, thresholds.current) : undefined}
            limits={thresholds.current}
          />
          <LiveTile
            field="temperature"
            label="Cell temperature"
            value={data?.cell_temp}
            unit="°C"
            level={data ? levelOf(data.cell_temp, thresholds.temperature) : undefined}
            limits={thresholds.temperature}
          />
          <LiveTile
            field="power"
            label="Power"
            value={data ? (data.pack_voltage * data.pack_current) / 1000 : undefined}
            unit="kW"
            level={undefined}
          />
        </div>
        <p className="muted small-print">
          {data ? `Reading of ${dateTime(data.timestamp)}. Current is positive while charging.` : 'No voltage, current or temperature readings yet.'}
        </p>
      </section>

      <CellsSection record={data} />

      <HealthSection batteryId={id} />

      <section aria-labelledby="history-title" className="block">
        <div className="block-head">
          <h2 id="history-title">History</h2>
          <fieldset className="segmented">
            <legend className="visually-hidden">Time range</legend>
            {(Object.keys(RANGES) as RangeKey[]).map((key) => (
              <label key={key} className={key === rangeKey ? 'checked' : undefined}>
                <input
                  type="radio"
                  name="range"
                  value={key}
                  checked={key === rangeKey}
                  onChange={() => window.location.replace(packHref(id, key))}
                />
                {RANGES[key].label}
              </label>
            ))}
          </fieldset>
          <label className="check">
            <input type="checkbox" checked={fitLimits} onChange={(event) => setFitLimits(event.target.checked)} />
            Scale to critical limits
          </label>
          <a className="button" href={exportUrl('battery-data', id, hoursParam, 'csv')} download>
            Download CSV <span className="visually-hidden">of the last {range.label}</span>
          </a>
        </div>
        <p className="muted small-print">
          {readings.phase === 'loading'
            ? 'Loading…'
            : readings.phase === 'error'
              ? `Could not load the history: ${readings.error}`
              : readings.bucketSeconds
                ? `Last ${range.label}: line is the mean, shaded band the min to max of each ${bucketLabel(readings.bucketSeconds)}.`
                : `Last ${range.label}: every reading.`}{' '}
          Green band: normal range; red lines: critical limits; shaded columns: alarm periods (amber warning, red critical).
        </p>
        <PackAlarmsList alarms={packAlarms} />
        <div className="charts">
          {CHARTS.map((chart, index) => (
            <TimeChart
              key={chart.field}
              id={`chart-${chart.field}`}
              title={chart.title}
              unit={chart.unit}
              color={chart.color}
              data={charts[index] as ChartData}
              xRange={xRange}
              limits={thresholds[chart.limits]}
              fitLimits={fitLimits}
              summary={chartSummary(readings, chart.field, chart.unit, range.label) + periodSummary(periods[chart.field] ?? [])}
              periods={periods[chart.field]}
            />
          ))}
        </div>
      </section>

      <section aria-labelledby="records-title" className="block">
        <h2 id="records-title">Performance and prediction records</h2>
        <p className="muted small-print">
          The latest records stored, whoever wrote them: the service&apos;s analytics (source battery_monitor_analytics) or an outside predictor.
        </p>
        <h3>Performance</h3>
        {perf ? (
          <div className="tiles">
            <TrendTile
              field="health"
              label="Health score"
              value={`${num(perf.health_score, 1)} %`}
              level={healthLevel(perf.health_score, thresholds.health)}
              xs={perfX}
              ys={perfRecords.map((r) => r.health_score)}
              digits={1}
              window={trendWindow}
              extra={`warning <\u00a0${thresholds.health.warning}\u00a0%, critical <\u00a0${thresholds.health.critical}\u00a0%`}
            />
            <TrendTile
              field="capacity"
              label="Capacity remaining"
              value={`${num(perf.capacity_remaining, 1)} %`}
              extra={`${num((perf.capacity_remaining / 100) * dashboard.specs.nominal_capacity_ah, 1)} of ${num(dashboard.specs.nominal_capacity_ah, 0)} Ah`}
              xs={perfX}
              ys={perfRecords.map((r) => r.capacity_remaining)}
              digits={1}
              window={trendWindow}
            />
            <TrendTile
              field="cycles"
              label="Cycle count"
              value={num(perf.cycle_count, 0)}
              extra={`of ${num(dashboard.specs.max_cycles, 0)} rated`}
              xs={perfX}
              ys={perfRecords.map((r) => r.cycle_count)}
              digits={0}
              window={trendWindow}
            />
            <TrendTile
              field="age"
              label="Age"
              value={`${num(perf.age_months, 1)} months`}
              xs={perfX}
              ys={perfRecords.map((r) => r.age_months)}
              digits={1}
              window={trendWindow}
            />
          </div>
        ) : (
          <p className="muted">No performance records for this pack yet (POST /api/battery-performance).</p>
        )}
        <h3>Prediction</h3>
        {pred ? (
          <div className="tiles">
            <TrendTile
              field="remaining-life"
              label="Remaining life"
              value={`${num(pred.remaining_life_hours, 0)} h`}
              extra={`about ${num(pred.remaining_life_hours / 24, 0)} days`}
              xs={predX}
              ys={predRecords.map((r) => r.remaining_life_hours)}
              digits={0}
              window={trendWindow}
            />
            <TrendTile
              field="remaining-cycles"
              label="Remaining cycles"
              value={num(pred.remaining_cycles, 0)}
              xs={predX}
              ys={predRecords.map((r) => r.remaining_cycles)}
              digits={0}
              window={trendWindow}
            />
            <TrendTile
              field="degradation"
              label="Degradation rate"
              value={`${num(pred.degradation_rate, 3)} %`}
              extra="capacity lost per 100 cycles"
              xs={predX}
              ys={predRecords.map((r) => r.degradation_rate)}
              digits={3}
              window={trendWindow}
            />
          </div>
        ) : (
          <p className="muted">No predictions for this pack yet (POST /api/battery-prediction).</p>
        )}
      </section>

      <section aria-labelledby="specs-title" className="block">
        <h2 id="specs-title">Battery specifications</h2>
        <SpecsList specs={dashboard.specs} />
      </section>
    </article>
  );
}

function bucketLabel(seconds: number): string {
  if (seconds < 120) return `${num(seconds, 0)} s`;
  if (seconds < 7200) return `${num(seconds / 60, 0)} min`;
  return `${num(seconds / 3600, 1)} h`;
}

