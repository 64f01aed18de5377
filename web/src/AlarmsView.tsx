/**
 * The Alarms page: the open alarms (live), each with an acknowledge form (who, and a note), and the
 * history with filters (state, severity, pack). Everything reads as text as well as colour.
 */
import { useEffect, useId, useState } from 'react';
import { acknowledgeAlarm, ApiError, fetchAlarms, type Alarm, type AlarmStateFilter } from './api';
import { dateTime, num } from './format';
import { packHref, useAlarms, useServices } from './hooks';
import { StatusBadge } from './StatusBadge';

const HISTORY_LIMIT = 200;
const STATE_TEXT: Record<Alarm['state'], string> = { active: 'Active', acknowledged: 'Acknowledged', cleared: 'Cleared' };

export function SeverityBadge({ severity }: { severity: Alarm['severity'] }) {
  return <StatusBadge level={severity} />;
}

function what(alarm: Alarm): string {
  return alarm.field === null ? alarm.rule_name : `${alarm.rule_name} (${alarm.field})`;
}

function AcknowledgeForm({ alarm, onDone }: { alarm: Alarm; onDone: () => void }) {
  const { alarms } = useServices();
  const id = useId();
  const [by, setBy] = useState(() => localStorage.getItem('alarm-ack-by') ?? '');
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    if (by.trim() === '') {
      setError('Say who acknowledges.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const acknowledged = await acknowledgeAlarm(alarm.id, by.trim(), note.trim());
      localStorage.setItem('alarm-ack-by', by.trim());
      alarms.apply(acknowledged);
      onDone();
    } catch (failure) {
      const status = failure instanceof ApiError ? failure.status : 0;
      setError(status === 401 ? 'Acknowledging needs the write key (API_KEY).' : `Not acknowledged: ${(failure as Error).message}`);
      setBusy(false);
      if (status === 409) void alarms.load();
    }
  };
  return (
    <form className="ack-form" onSubmit={(event) => void submit(event)} aria-label={`Acknowledge ${what(alarm)} on ${alarm.battery_id}`}>
      <label htmlFor={`${id}-by`}>Acknowledged by</label>
      <input id={`${id}-by`} name="by" value={by} maxLength={100} autoComplete="name" required onChange={(event) => setBy(event.target.value)} />
      <label htmlFor={`${id}-note`}>Note</label>
      <input id={`${id}-note`} name="note" value={note} maxLength={1000} onChange={(event) => setNote(event.target.value)} />
      <button type="submit" className="button" disabled={busy}>
        {busy ? 'Acknowledging…' : 'Acknowledge'}
      </button>
      <button type="button" className="button-secondary" onClick={onDone} disabled={busy}>
        Cancel
      </button>
      <span role="alert" className="form-error">
        {error}
      </span>
    </form>
  );
}

function OpenAlarmRow({ alarm }: { alarm: Alarm }) {
  const [acknowledging, setAcknowledging] = useState(false);
  return (
    <>
      <tr data-alarm={alarm.id} data-state={alarm.state} className={`row-${alarm.severity}`}>
        <th scope="row" data-label="Pack">
          <a href={packHref(alarm.battery_id)}>{alarm.battery_id}</a>
        </th>
        <td data-label="Alarm">{what(alarm)}</td>
        <td data-label="Severity">
          <SeverityBadge severity={alarm.severity} />
        </td>
        <td data-label="State" data-field="state">
          {STATE_TEXT[alarm.state]}
          {alarm.state === 'acknowledged' && alarm.acknowledged_by ? <span className="muted"> by {alarm.acknowledged_by}</span> : null}
          {alarm.acknowledged_note ? <span className="muted">: {alarm.acknowledged_note}</span> : null}
        </td>
        <td data-label="Value" className="num">
          {num(alarm.value, 2)}
        </td>
        <td data-label="Raised">{dateTime(alarm.raised_at)}</td>
        <td data-label="Action">
          {alarm.state === 'active' && !acknowledging ? (
            <button type="button" className="button" onClick={() => setAcknowledging(true)}>
              Acknowledge<span className="visually-hidden"> {what(alarm)} on {alarm.battery_id}</span>
            </button>
          ) : null}
        </td>
      </tr>
      {acknowledging ? (
        <tr className="ack-row">
          <td colSpan={7}>
            <AcknowledgeForm alarm={alarm} onDone={() => setAcknowledging(false)} />
          </td>
        </tr>
      ) : null}
    </>
  );
}

function History({ version }: { version: number }) {
  const id = useId();
  const [state, setState] = useState<AlarmStateFilter>('all');
  const [severity, setSeverity] = useState<'' | Alarm['severity']>('');
  const [pack, setPack] = useState('');
  const [result, setResult] = useState<{ alarms: Alarm[]; error: string | null; loading: boolean }>({ alarms: [], error: null, loading: true });
  useEffect(() => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      fetchAlarms({ state, severity: severity === '' ? undefined : severity, battery_id: pack.trim() || undefined, limit: HISTORY_LIMIT }, controller.signal).then(
        (alarms) => setResult({ alarms, error: null, loading: false }),
        (error: Error) => {
          if (!controller.signal.aborted) setResult((previous) => ({ ...previous, error: error.message, loading: false }));
        },
      );
    }, 150);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [state, severity, pack, version]);
  return (
    <section aria-labelledby="history-title" className="block">
      <h2 id="history-title">History</h2>
      <form className="filters" role="search" aria-label="Filter alarms" onSubmit={(event) => event.preventDefault()}>
        <label htmlFor={`${id}-state`}>State</label>
        <select id={`${id}-state`} value={state} onChange={(event) => setState(event.target.value as AlarmStateFilter)}>
          <option value="all">All</option>
          <option value="open">Open</option>
          <option value="active">Active</option>
          <option value="acknowledged">Acknowledged</option>
          <option value="cleared">Cleared</option>
        </select>
        <label htmlFor={`${id}-severity`}>Severity</label>
        <select id={`${id}-severity`} value={severity} onChange={(event) => setSeverity(event.target.value as '' | Alarm['severity'])}>
          <option value="">Any</option>
          <option value="warning">Warning</option>
          <option value="critical">Critical</option>
        </select>
        <label htmlFor={`${id}-pack`}>Pack</label>
        <input id={`${id}-pack`} value={pack} maxLength={64} onChange={(event) => setPack(event.target.value)} />
      </form>
      {result.error ? <p role="alert">Could not load the alarms: {result.error}</p> : null}
      {!result.loading && result.alarms.length === 0 && !result.error ? <p className="muted">No alarms match.</p> : null}
      {result.alarms.length > 0 ? (
        <div className="table-wrap card">
          <table className="fleet alarms-table" data-table="history">
            <caption className="visually-hidden">Alarms matching the filters, newest raised first (at most {HISTORY_LIMIT}).</caption>
            <thead>
              <tr>
                <th scope="col">Pack</th>
                <th scope="col">Alarm</th>
                <th scope="col">Severity</th>
                <th scope="col">State</th>
                <th scope="col">Raised</th>
                <th scope="col">Cleared</th>
              </tr>
            </thead>
            <tbody>
              {result.alarms.map((alarm) => (
                <tr key={alarm.id} data-alarm={alarm.id} data-state={alarm.state}>
                  <th scope="row" data-label="Pack">
                    <a href={packHref(alarm.battery_id)}>{alarm.battery_id}</a>
                  </th>
                  <td data-label="Alarm">{what(alarm)}</td>
                  <td data-label="Severity">
                    <SeverityBadge severity={alarm.peak_severity} />
                  </td>
                  <td data-label="State" data-field="state">
                    {STATE_TEXT[alarm.state]}
                  </td>
                  <td data-label="Raised">{dateTime(alarm.raised_at)}</td>
                  <td data-label="Cleared">{alarm.cleared_at === null ? '—' : dateTime(alarm.cleared_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

export function AlarmsView() {
  const alarms = useAlarms();
  const open = alarms.open;
  return (
    <section aria-labelledby="alarms-title">
      <div className="view-head">
        <h1 id="alarms-title" tabIndex={-1}>
          Alarms
        </h1>
      </div>
      <section aria-labelledby="open-title" className="block">
        <h2 id="open-title">Open</h2>
        <p aria-live="polite" className="muted" data-field="open-count">
          {alarms.phase === 'loading' ? 'Loading…' : open.length === 0 ? 'No open alarms.' : `${open.length} open ${open.length === 1 ? 'alarm' : 'alarms'}.`}
        </p>
        {open.length > 0 ? (
          <div className="table-wrap card">
            <table className="fleet alarms-table" data-table="open">
              <caption className="visually-hidden">Open alarms, newest raised first. Acknowledge one to say it is being seen to; it stays open until it clears.</caption>
              <thead>
                <tr>
                  <th scope="col">Pack</th>
                  <th scope="col">Alarm</th>
                  <th scope="col">Severity</th>
                  <th scope="col">State</th>
                  <th scope="col" className="num">Value</th>
                  <th scope="col">Raised</th>
                  <th scope="col">
                    <span className="visually-hidden">Action</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {open.map((alarm) => (
                  <OpenAlarmRow key={alarm.id} alarm={alarm} />
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </section>
      <History version={alarms.version} />
    </section>
  );
}
