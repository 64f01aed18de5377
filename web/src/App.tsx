import { useEffect, useRef, useState } from 'react';
import { AlarmsView } from './AlarmsView';
import { Banner } from './Banner';
import { Brand } from './Brand';
import { FleetView } from './FleetView';
import { ago } from './format';
import { useAlarms, useConnection, useFleet, useNow, useRoute } from './hooks';
import { PackView } from './PackView';
import { isStale, packStatus } from './status';

/** `onSignOut` is there when the server needs a key to read (the page signed in with it). */
export function App({ onSignOut }: { onSignOut?: () => Promise<void> }) {
  const route = useRoute();
  const fleet = useFleet();
  const connection = useConnection();
  const alarms = useAlarms();
  const now = useNow() - fleet.clockOffset;
  const main = useRef<HTMLElement>(null);

  // Moving between views: put focus on the new view's heading, as a page load would.
  const viewKey = route.view === 'pack' ? `pack:${route.id}` : route.view;
  const firstView = useRef(true);
  useEffect(() => {
    if (firstView.current) {
      firstView.current = false;
      return;
    }
    main.current?.querySelector<HTMLElement>('h1')?.focus();
  }, [viewKey]);

  const unreachable = connection === 'down' || (fleet.phase === 'error' && fleet.error !== undefined);
  const packs = [...fleet.packs.values()];
  let stale: string | null = null;
  if (!unreachable && fleet.phase === 'ready') {
    if (route.view === 'pack') {
      const pack = fleet.packs.get(route.id);
      if (pack?.lastHeard !== undefined && isStale(pack.lastHeard, now)) {
        stale = `${pack.id} was last heard from ${ago(now - pack.lastHeard)}. The values shown are its last readings.`;
      }
    } else if (packs.length > 0) {
      const staleCount = packs.filter((pack) => isStale(pack.lastHeard, now)).length;
      if (staleCount === packs.length) {
        const newest = Math.max(...packs.map((pack) => pack.lastHeard ?? 0));
        stale = `No pack has sent data for over a minute (newest reading ${ago(now - newest)}). Is the collector or simulator running?`;
      } else if (staleCount > 0) {
        stale = `${staleCount} of ${packs.length} packs ${staleCount === 1 ? 'has' : 'have'} sent nothing for over a minute.`;
      }
    }
  }

  // The tab title tells an operator with the tab in the background that something needs a look.
  const thresholds = fleet.dashboard?.thresholds;
  const critical = thresholds ? packs.filter((pack) => packStatus(pack.data, pack.performance, thresholds).level === 'critical').length : 0;
  const openCount = alarms.open.length;
  const title = `${critical > 0 ? `(${critical} critical) ` : ''}${route.view === 'pack' ? `${route.id} · ` : route.view === 'alarms' ? 'Alarms · ' : ''}Battery monitor`;
  useEffect(() => {
    document.title = title;
  }, [title]);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <div className="app-header-inner">
          <Brand />
          <nav aria-label="Main">
            <a href="#/" aria-current={route.view === 'fleet' ? 'page' : undefined}>
              Fleet
            </a>
            <a href="#/alarms" aria-current={route.view === 'alarms' ? 'page' : undefined} data-nav="alarms">
              Alarms
              {openCount > 0 ? (
                <span className="nav-count">
                  {' '}
                  {openCount}
                  <span className="visually-hidden"> open</span>
                </span>
              ) : null}
            </a>
            <a href="/docs">API docs</a>
          </nav>
          <span className={`conn conn-${connection}`} title="Live updates from /api/stream">
            <span className="conn-dot" aria-hidden="true" />
            {connection === 'open' ? 'Live' : connection === 'connecting' ? 'Connecting…' : 'Offline'}
          </span>
          {onSignOut ? <SignOutButton onSignOut={onSignOut} /> : null}
        </div>
      </header>
      <Banner unreachable={unreachable} stale={stale} />
      <main id="main" ref={main}>
        {route.view === 'pack' ? <PackView id={route.id} rangeKey={route.range ?? '1h'} /> : route.view === 'alarms' ? <AlarmsView /> : <FleetView />}
      </main>
    </>
  );
}

function SignOutButton({ onSignOut }: { onSignOut: () => Promise<void> }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const click = async () => {
    setBusy(true);
    setError(null);
    try {
      await onSignOut();
    } catch (failure) {
      // Still signed in (the cookie could not be cleared): say so rather than pretend.
      setError(`Sign-out failed: ${(failure as Error).message}`);
      setBusy(false);
    }
  };
  return (
    <span className="signout">
      <button type="button" className="button-quiet" onClick={() => void click()} disabled={busy}>
        {busy ? 'Signing out…' : 'Sign out'}
      </button>
      <span role="alert" className="signout-error">
        {error}
      </span>
    </span>
  );
}
