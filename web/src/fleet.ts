/**
 * The fleet as the page knows it: the latest record of each kind per pack, the specs and
 * thresholds. Loaded once over HTTP, then kept current by the live feed; reloaded after a
 * reconnect so nothing missed while offline stays missing. Read with useSyncExternalStore.
 */
import {
  fetchBatteries,
  fetchDashboard,
  type BatterySummary,
  type Dashboard,
  type DataRecord,
  type Kind,
  type PerformanceRecord,
  type PredictionRecord,
  type RecordOf,
} from './api';
import type { LiveFeed, LiveRecord } from './live';

export interface PackState {
  id: string;
  data: DataRecord | null;
  performance: PerformanceRecord | null;
  prediction: PredictionRecord | null;
  /** Server Unix seconds when the pack was last heard from (any kind). */
  lastHeard: number | undefined;
}

export interface FleetSnapshot {
  phase: 'loading' | 'ready' | 'error';
  error?: string;
  dashboard: Dashboard | null;
  packs: ReadonlyMap<string, PackState>;
  /** Browser clock minus server clock, in seconds, estimated from live records. */
  clockOffset: number;
}

const FIELD: Record<Kind, 'data' | 'performance' | 'prediction'> = {
  'battery-data': 'data',
  'battery-performance': 'performance',
  'battery-prediction': 'prediction',
};

const RETRY_MS = 5000;
const CONCURRENCY = 6;
const NOTIFY_MS = 50;

async function mapLimited<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index] as T);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const newer = <T extends { timestamp: number }>(a: T | null, b: T | null): T | null =>
  a === null ? b : b === null ? a : b.timestamp >= a.timestamp ? b : a;

// The age of the data shown, as /api/batteries counts last_seen: a backfilled old reading does not
// make a silent pack look alive.
const heardAt = (record: { timestamp: number } | null) => record?.timestamp;

function maxDefined(...values: (number | undefined)[]): number | undefined {
  const defined = values.filter((value): value is number => value !== undefined && Number.isFinite(value));
  return defined.length === 0 ? undefined : Math.max(...defined);
}

function emptyPack(id: string): PackState {
  return { id, data: null, performance: null, prediction: null, lastHeard: undefined };
}

export class FleetStore {
  private snapshot: FleetSnapshot = { phase: 'loading', dashboard: null, packs: new Map(), clockOffset: 0 };
  private readonly listeners = new Set<() => void>();
  private notifyTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private loading: AbortController | null = null;
  private offsetSamples: number[] = [];
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly feed: LiveFeed) {}

  start(): void {
    this.unsubscribe.push(
      this.feed.onRecord((event) => this.apply(event)),
      this.feed.onReconnect(() => void this.load()),
    );
    this.feed.start();
    void this.load();
  }

  stop(): void {
    for (const off of this.unsubscribe.splice(0)) off();
    this.loading?.abort();
    clearTimeout(this.retryTimer);
    clearTimeout(this.notifyTimer);
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): FleetSnapshot => this.snapshot;

  /** Fetches batteries, dashboard and each pack's latest records; merges with what arrived live meanwhile. */
  async load(): Promise<void> {
    this.loading?.abort();
    clearTimeout(this.retryTimer);
    const controller = new AbortController();
    this.loading = controller;
    const { signal } = controller;
    try {
      const started = Date.now() / 1000;
      const [dashboard, batteries] = await Promise.all([fetchDashboard(undefined, signal), fetchBatteries(signal)]);
      if (typeof dashboard.timestamp === 'number' && this.offsetSamples.length === 0) {
        // Until live records give a better estimate: the server's clock at the middle of the request.
        this.snapshot = { ...this.snapshot, clockOffset: (started + Date.now() / 1000) / 2 - dashboard.timestamp };
      }
      // One request per pack: /api/dashboard?battery_id= answers the latest of all three kinds.
      const loaded = await mapLimited(batteries, CONCURRENCY, async (summary: BatterySummary) => {
        const latest = await fetchDashboard(summary.battery_id, signal);
        return {
          summary,
          data: latest.battery_data,
          performance: latest.performance,
          prediction: latest.prediction,
        };
      });
      if (signal.aborted) return;
      const packs = new Map(this.snapshot.packs);
      for (const { summary, data, performance, prediction } of loaded) {
        const current = packs.get(summary.battery_id) ?? emptyPack(summary.battery_id);
        const merged = {
          ...current,
          data: newer(current.data, data),
          performance: newer(current.performance, performance),
          prediction: newer(current.prediction, prediction),
        };
        merged.lastHeard = maxDefined(
          current.lastHeard,
          summary.last_seen,
          heardAt(merged.data),
          heardAt(merged.performance),
          heardAt(merged.prediction),
        );
        packs.set(summary.battery_id, merged);
      }
      this.snapshot = { ...this.snapshot, phase: 'ready', error: undefined, dashboard, packs };
      this.notify(true);
    } catch (error) {
      if (signal.aborted) return;
      this.snapshot = { ...this.snapshot, phase: this.snapshot.dashboard ? 'ready' : 'error', error: String((error as Error).message) };
      this.notify(true);
      this.retryTimer = setTimeout(() => void this.load(), RETRY_MS);
    } finally {
      if (this.loading === controller) this.loading = null;
    }
  }

  private apply({ kind, record }: LiveRecord): void {
    if (typeof record.received_at === 'number') {
      this.offsetSamples.push(Date.now() / 1000 - record.received_at);
      if (this.offsetSamples.length > 20) this.offsetSamples.shift();
    }
    const packs = new Map(this.snapshot.packs);
    const current = packs.get(record.battery_id) ?? emptyPack(record.battery_id);
    const field = FIELD[kind];
    const next: PackState = { ...current, [field]: newer(current[field] as RecordOf[typeof kind] | null, record) };
    next.lastHeard = maxDefined(current.lastHeard, heardAt(record));
    packs.set(record.battery_id, next);
    this.snapshot = {
      ...this.snapshot,
      packs,
      clockOffset: this.offsetSamples.length > 0 ? Math.min(...this.offsetSamples) : this.snapshot.clockOffset,
    };
    this.notify(false);
  }

  /** Live records arrive in bursts: tell React at most every NOTIFY_MS. */
  private notify(now: boolean): void {
    if (now) {
      clearTimeout(this.notifyTimer);
      this.notifyTimer = undefined;
      for (const listener of this.listeners) listener();
      return;
    }
    if (this.notifyTimer !== undefined) return;
    this.notifyTimer = setTimeout(() => {
      this.notifyTimer = undefined;
      for (const listener of this.listeners) listener();
    }, NOTIFY_MS);
  }
}
