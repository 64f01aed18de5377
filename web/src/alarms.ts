/**
 * The open alarms as the page knows them: loaded from GET /api/alarms?state=open, kept current by
 * the live stream's `event: alarm` changes, and reloaded after a reconnect, after records arrive for
 * a pack (a reading may have raised or cleared one) and every POLL_MS, so the page is right even where
 * a stream carries no alarm events. Read with useSyncExternalStore.
 */
import { fetchAlarms, type Alarm } from './api';
import type { LiveFeed } from './live';

export type Severity = Alarm['severity'];

export interface PackAlarms {
  count: number;
  worst: Severity;
}

export interface AlarmsSnapshot {
  phase: 'loading' | 'ready' | 'error';
  open: readonly Alarm[];
  /** Open alarms per pack: how many, and the worst severity. */
  byPack: ReadonlyMap<string, PackAlarms>;
  /** Bumped at every change: views holding their own lists (history, a pack's chart) refetch on it. */
  version: number;
}

const POLL_MS = 10_000;
/** Records come many a second: one reload for a burst. */
const RELOAD_AFTER_RECORDS_MS = 400;
const OPEN_LIMIT = 1000;

const rank = (severity: Severity) => (severity === 'critical' ? 2 : 1);

function summarize(open: readonly Alarm[]): Map<string, PackAlarms> {
  const byPack = new Map<string, PackAlarms>();
  for (const alarm of open) {
    const entry = byPack.get(alarm.battery_id);
    if (entry === undefined) byPack.set(alarm.battery_id, { count: 1, worst: alarm.severity });
    else {
      entry.count++;
      if (rank(alarm.severity) > rank(entry.worst)) entry.worst = alarm.severity;
    }
  }
  return byPack;
}

export class AlarmsStore {
  private snapshot: AlarmsSnapshot = { phase: 'loading', open: [], byPack: new Map(), version: 0 };
  private readonly listeners = new Set<() => void>();
  private readonly unsubscribe: (() => void)[] = [];
  private pollTimer: ReturnType<typeof setInterval> | undefined;
  private reloadTimer: ReturnType<typeof setTimeout> | undefined;
  private loading: AbortController | undefined;

  constructor(private readonly feed: LiveFeed) {}

  start(): void {
    this.unsubscribe.push(
      this.feed.onAlarm(({ alarm }) => this.apply(alarm)),
      this.feed.onReconnect(() => void this.load()),
      this.feed.onRecord(() => this.reloadSoon()),
    );
    this.pollTimer = setInterval(() => void this.load(), POLL_MS);
    void this.load();
  }

  stop(): void {
    for (const off of this.unsubscribe.splice(0)) off();
    clearInterval(this.pollTimer);
    clearTimeout(this.reloadTimer);
    this.loading?.abort();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): AlarmsSnapshot => this.snapshot;

  /** After an action of this page (an acknowledgement): its answer is the alarm as it is now. */
  apply(alarm: Alarm): void {
    const others = this.snapshot.open.filter((open) => open.id !== alarm.id);
    const open = alarm.state === 'cleared' ? others : [alarm, ...others].sort((a, b) => b.raised_at - a.raised_at);
    this.set({ phase: 'ready', open });
  }

  private reloadSoon(): void {
    if (this.reloadTimer !== undefined) return;
    this.reloadTimer = setTimeout(() => {
      this.reloadTimer = undefined;
      void this.load();
    }, RELOAD_AFTER_RECORDS_MS);
  }

  async load(): Promise<void> {
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    try {
      const open = await fetchAlarms({ state: 'open', limit: OPEN_LIMIT }, controller.signal);
      if (controller.signal.aborted) return;
      const same =
        this.snapshot.phase === 'ready' &&
        open.length === this.snapshot.open.length &&
        open.every((alarm, i) => alarm.id === this.snapshot.open[i]?.id && alarm.updated_at === this.snapshot.open[i]?.updated_at);
      if (!same) this.set({ phase: 'ready', open });
    } catch {
      if (controller.signal.aborted) return;
      // Kept as it was; the page says when the API is unreachable, and the next poll retries.
      if (this.snapshot.phase === 'loading') this.set({ phase: 'error', open: [] });
    }
  }

  private set(next: { phase: AlarmsSnapshot['phase']; open: readonly Alarm[] }): void {
    this.snapshot = { ...next, byPack: summarize(next.open), version: this.snapshot.version + 1 };
    for (const listener of this.listeners) listener();
  }
}
