import { EmptyState } from './EmptyState';
import type { PackState } from './fleet';
import { ago, hoursAndDays, num } from './format';
import type { PackAlarms } from './alarms';
import { packHref, useAlarms, useFleet, useNow } from './hooks';
import { StatusBadge } from './StatusBadge';
import { healthLevel, isStale, levelOf, packStatus, type Level } from './status';
import type { Thresholds } from './api';

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

function Value({ value, unit, digits = 1, level, field }: { value: number | undefined; unit: string; digits?: number; level?: Level; field: string }) {
  if (value === undefined) return <span className="muted" data-field={field}>—</span>;
  return (
    <span className={`value value-${level ?? 'normal'}`} data-field={field}>
      {num(value, digits)}
      <span className="unit"> {unit}</span>
      {level && level !== 'normal' ? <span className="visually-hidden"> ({level})</span> : null}
    </span>
  );
}

/** The pack's open alarms, from the alarms themselves (not only from the latest values). */
function AlarmCell({ alarms }: { alarms: PackAlarms | undefined }) {
  if (alarms === undefined) return <span className="muted" data-field="alarms">None</span>;
  return (
    <a href="#/alarms" className={`alarm-count alarm-count-${alarms.worst}`} data-field="alarms" data-worst={alarms.worst}>
      {alarms.count} open, worst {alarms.worst}
    </a>
  );
}

function Row({ pack, thresholds, now, alarms }: { pack: PackState; thresholds: Thresholds; now: number; alarms: PackAlarms | undefined }) {
  const { data, performance, prediction } = pack;
  const status = packStatus(data, performance, thresholds);
  const stale = isStale(pack.lastHeard, now);
  const href = packHref(pack.id);
  return (
    <tr
      data-pack={pack.id}
      className={`row-${status.level}${stale ? ' row-stale' : ''}`}
      onClick={(event) => {
        // The pack link is the keyboard path; a click anywhere on the row is the mouse shortcut.
        if (!(event.target as HTMLElement).closest('a')) window.location.hash = href;
      }}
    >
      <th scope="row" data-label="Pack">
        <a href={href}>{pack.id}</a>
      </th>
      <td data-label="Status">
        <StatusBadge level={status.level} stale={stale} />
        {status.findings[0] ? <span className="finding">{status.findings[0].text}</span> : null}
      </td>
      <td data-label="Alarms">
        <AlarmCell alarms={alarms} />
      </td>
      <td data-label="Voltage" className="num">
        <Value field="voltage" value={data?.pack_voltage} unit="V" level={data ? levelOf(data.pack_voltage, thresholds.voltage) : undefined} />
      </td>
      <td data-label="Current" className="num">
        <Value field="current" value={data?.pack_current} unit="A" level={data ? levelOf(data.pack_current, thresholds.current) : undefined} />
      </td>
      <td data-label="Temperature" className="num">
        <Value field="temperature" value={data?.cell_temp} unit="°C" level={data ? levelOf(data.cell_temp, thresholds.temperature) : undefined} />
      </td>
      <td data-label="Health" className="num">
        <Value
          field="health"
          value={performance?.health_score}
          unit="%"
          level={performance ? healthLevel(performance.health_score, thresholds.health) : undefined}
        />
      </td>
      <td data-label="Remaining life" className="num">
        <span data-field="remaining-life" className={prediction ? undefined : 'muted'}>
          {prediction ? hoursAndDays(prediction.remaining_life_hours) : '—'}
        </span>
      </td>
      <td data-label="Last heard" className={`num${stale ? ' stale-text' : ''}`}>
        <span data-field="last-heard">{pack.lastHeard === undefined ? 'never' : ago(now - pack.lastHeard)}</span>
      </td>
    </tr>
  );
}

export function FleetView() {
  const fleet = useFleet();
  const alarms = useAlarms();
  const now = useNow() - fleet.clockOffset;
  const packs = [...fleet.packs.values()].sort((a, b) => collator.compare(a.id, b.id));
  const thresholds = fleet.dashboard?.thresholds;

  if (fleet.phase === 'loading') {
    return (
      <section aria-busy="true">
        <h1 tabIndex={-1}>Fleet</h1>
        <p className="muted">Loading packs…</p>
      </section>
    );
  }
  if (!thresholds) {
    return (
      <section>
        <h1 tabIndex={-1}>Fleet</h1>
        <p className="muted">The dashboard could not load{fleet.error ? `: ${fleet.error}` : ''}. It retries by itself.</p>
      </section>
    );
  }

  const levels = packs.map((pack) => packStatus(pack.data, pack.performance, thresholds).level);
  const critical = levels.filter((level) => level === 'critical').length;
  const warning = levels.filter((level) => level === 'warning').length;
  const stale = packs.filter((pack) => isStale(pack.lastHeard, now)).length;

  return (
    <section aria-labelledby="fleet-title">
      <div className="view-head">
        <h1 id="fleet-title" tabIndex={-1}>
          Fleet
        </h1>
        {packs.length > 0 ? (
          <ul className="summary" aria-label="Fleet summary">
            <li>
              <strong>{packs.length}</strong> {packs.length === 1 ? 'pack' : 'packs'}
            </li>
            <li className={critical ? 'summary-critical' : undefined}>
              <strong>{critical}</strong> critical
            </li>
            <li className={warning ? 'summary-warning' : undefined}>
              <strong>{warning}</strong> warning
            </li>
            <li className={stale ? 'summary-stale' : undefined}>
              <strong>{stale}</strong> stale
            </li>
          </ul>
        ) : null}
      </div>
      {packs.length === 0 ? (
        <EmptyState />
      ) : (
        <div className="table-wrap card">
          <table className="fleet">
            <caption className="visually-hidden">
              Every pack with its open alarms, latest readings, status and when it was last heard from. Select a pack for its charts.
            </caption>
            <thead>
              <tr>
                <th scope="col">Pack</th>
                <th scope="col">Status</th>
                <th scope="col">Alarms</th>
                <th scope="col" className="num">Voltage</th>
                <th scope="col" className="num">Current</th>
                <th scope="col" className="num">Temperature</th>
                <th scope="col" className="num">Health</th>
                <th scope="col" className="num">Remaining life</th>
                <th scope="col" className="num">Last heard</th>
              </tr>
            </thead>
            <tbody>
              {packs.map((pack) => (
                <Row key={pack.id} pack={pack} thresholds={thresholds} now={now} alarms={alarms.byPack.get(pack.id)} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
