/**
 * The pack's health as the service computes it (GET /api/batteries/{battery_id}/health, docs/analytics.md),
 * kept current: fetched again after new readings of the pack, at most every few seconds, and retried
 * while the service answers 503 (analytics catching up after a start). Also the state-of-health history
 * for the chart: the battery-performance records the analytics writes, one point per whole cycle.
 */
import { useEffect, useState } from 'react';
import {
  ANALYTICS_SOURCE,
  ApiError,
  fetchHealth,
  fetchHistory,
  fetchPackSpecs,
  MAX_HISTORY_HOURS,
  MAX_HISTORY_LIMIT,
  type BatteryHealth,
  type Estimate,
  type PackSpecsAnswer,
  type PerformanceRecord,
} from './api';
import { num } from './format';
import { useServices } from './hooks';

/** Readings may come every second; the estimates change slowly and each fetch costs the server a computation. */
export const HEALTH_REFRESH_MS = 3000;
/** After a 503 or a failed fetch. */
export const HEALTH_RETRY_MS = 5000;

export interface PackHealth {
  /** loading: first fetch; missing: 404; unavailable: 503 (catching up after a start, or analytics off); error: any other failure. */
  phase: 'loading' | 'ready' | 'missing' | 'unavailable' | 'error';
  /** The last estimates answered: kept while a later fetch fails, so a restart of the service does not blank them. */
  health: BatteryHealth | null;
  /** The pack's specs with its overrides; null until answered (not needed to show the estimates). */
  specs: PackSpecsAnswer | null;
  /** The API's message for missing, unavailable and error. */
  detail?: string;
}

export function usePackHealth(batteryId: string): PackHealth {
  const { feed } = useServices();
  const [state, setState] = useState<PackHealth>({ phase: 'loading', health: null, specs: null });

  useEffect(() => {
    let stopped = false;
    let controller: AbortController | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let lastFetch = -Infinity;
    // A reading that arrives during a fetch may not be in its answer: one more fetch follows.
    let again = false;

    const schedule = (delayMs: number) => {
      if (stopped || timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        void load();
      }, delayMs);
    };
    const soon = () => {
      if (controller !== null) again = true;
      else schedule(Math.max(0, lastFetch + HEALTH_REFRESH_MS - Date.now()));
    };

    async function load(): Promise<void> {
      controller = new AbortController();
      const { signal } = controller;
      lastFetch = Date.now();
      again = false;
      try {
        const [health, specs] = await Promise.all([
          fetchHealth(batteryId, signal),
          // The overrides only mark which specs are the pack's own: the estimates show without them.
          fetchPackSpecs(batteryId, signal).catch(() => null),
        ]);
        if (stopped) return;
        setState((previous) => ({ phase: 'ready', health, specs: specs ?? previous.specs }));
      } catch (error) {
        if (stopped) return;
        const status = error instanceof ApiError ? error.status : -1;
        const detail = (error as Error).message;
        setState((previous) => ({ ...previous, phase: status === 404 ? 'missing' : status === 503 ? 'unavailable' : 'error', detail }));
        // A pack unknown to the service becomes known with its next reading, which schedules a fetch.
        if (status !== 404) schedule(HEALTH_RETRY_MS);
      } finally {
        controller = null;
      }
      if (again) soon();
    }

    setState({ phase: 'loading', health: null, specs: null });
    void load();
    const offRecord = feed.onRecord((event) => {
      if (event.kind === 'battery-data' && event.record.battery_id === batteryId) soon();
    });
    const offReconnect = feed.onReconnect(soon);
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
      offRecord();
      offReconnect();
    };
  }, [feed, batteryId]);

  return state;
}

/** State of health (%) at each whole equivalent cycle, cycles ascending. */
export interface SohHistory {
  phase: 'loading' | 'ready' | 'error';
  error?: string;
  cycles: number[];
  soh: number[];
}

/**
 * The analytics' battery-performance records of the pack, newest per cycle count (one is written per
 * capacity segment and per whole cycle), kept live from the stream. Records of an outside predictor
 * keep their own source and are left out (by the read's `source=`, and here for the stream's): their
 * cycle counts are not the service's.
 */
export function useSohHistory(batteryId: string): SohHistory {
  const { feed } = useServices();
  const [state, setState] = useState<SohHistory>({ phase: 'loading', cycles: [], soh: [] });
  const [reloads, setReloads] = useState(0);
  useEffect(() => feed.onReconnect(() => setReloads((n) => n + 1)), [feed]);

  useEffect(() => {
    const controller = new AbortController();
    const byCycle = new Map<number, { soh: number; timestamp: number }>();
    let loaded = false;
    const add = (record: PerformanceRecord) => {
      if (record.source !== ANALYTICS_SOURCE) return;
      const known = byCycle.get(record.cycle_count);
      if (known === undefined || known.timestamp <= record.timestamp) byCycle.set(record.cycle_count, { soh: record.health_score, timestamp: record.timestamp });
    };
    const publish = () => {
      const cycles = [...byCycle.keys()].sort((a, b) => a - b);
      setState({ phase: 'ready', cycles, soh: cycles.map((cycle) => byCycle.get(cycle)!.soh) });
    };
    // Live records that come while the history loads are added to it: `add` keeps the newest either way.
    const off = feed.onRecord((event) => {
      if (event.kind !== 'battery-performance' || event.record.battery_id !== batteryId) return;
      add(event.record);
      if (loaded) publish();
    });
    setState({ phase: 'loading', cycles: [], soh: [] });
    fetchHistory('battery-performance', batteryId, MAX_HISTORY_HOURS, MAX_HISTORY_LIMIT, controller.signal, ANALYTICS_SOURCE)
      .then((records) => {
        for (const record of records) add(record);
        loaded = true;
        publish();
      })
      .catch((error: Error) => {
        if (!controller.signal.aborted) setState({ phase: 'error', error: error.message, cycles: [], soh: [] });
      });
    return () => {
      controller.abort();
      off();
    };
  }, [feed, batteryId, reloads]);

  return state;
}

/** "91.2 %", "1,204 cycles": the value with its unit, or null when there is none. */
export function estimateText(estimate: Estimate, digits: number, unit = estimate.unit): string | null {
  if (estimate.value === null) return null;
  return unit === '' ? num(estimate.value, digits) : `${num(estimate.value, digits)} ${unit}`;
}

/** "89.8–92.5 %", "850 or more"; null when the estimate has no interval. */
export function intervalText(estimate: Estimate, digits: number, unit = estimate.unit): string | null {
  if (estimate.value === null || estimate.low === null) return null;
  const suffix = unit === '' ? '' : ` ${unit}`;
  if (estimate.high === null) return `${num(estimate.low, digits)}${suffix} or more`;
  return `${num(estimate.low, digits)}–${num(estimate.high, digits)}${suffix}`;
}

/** "from 412 capacity segments"; null where the estimate rests on the readings alone. */
export function segmentsText(estimate: Estimate): string | null {
  if (estimate.segments === null) return null;
  return `from ${num(estimate.segments, 0)} capacity ${estimate.segments === 1 ? 'segment' : 'segments'}`;
}

/** The projection to end of life, in equivalent cycles: from now to where the fitted line meets the threshold. */
export interface Projection {
  cycles: number;
  soh: number;
  endOfLife: number;
  /** Cycles at end of life: the estimate and its interval (high null: no upper bound). */
  end: number;
  endLow: number | null;
  endHigh: number | null;
}

export function projectionOf(health: BatteryHealth): Projection | null {
  const cycles = health.equivalent_cycles.value;
  const soh = health.soh.value;
  const rul = health.rul_cycles;
  if (cycles === null || soh === null || rul.value === null) return null;
  return {
    cycles,
    soh,
    endOfLife: health.specs.end_of_life_soh,
    end: cycles + rul.value,
    endLow: rul.low === null ? null : cycles + rul.low,
    endHigh: rul.high === null ? null : cycles + rul.high,
  };
}

/** What the chart shows, in words: its text alternative. */
export function sohSummary(history: SohHistory, health: BatteryHealth | null): string {
  const parts: string[] = [];
  const n = history.cycles.length;
  if (n > 0) {
    parts.push(
      `State of health measured at ${num(n, 0)} whole ${n === 1 ? 'cycle' : 'cycles'}: ${num(history.soh[0], 1)} % at cycle ${num(history.cycles[0], 0)}` +
        (n > 1 ? `, ${num(history.soh[n - 1], 1)} % at cycle ${num(history.cycles[n - 1], 0)}.` : '.'),
    );
  }
  if (health === null) return parts.join(' ');
  const projection = projectionOf(health);
  if (projection !== null) {
    const interval = intervalText(health.rul_cycles, 0, '');
    parts.push(
      `Now ${num(projection.soh, 1)} % at ${num(projection.cycles, 1)} cycles; projected to reach the end of life at ` +
        `${num(projection.endOfLife, 0)} % after about ${num(health.rul_cycles.value, 0)} more cycles, at cycle ${num(projection.end, 0)}` +
        (interval === null ? '.' : ` (95 % interval of the remaining cycles: ${interval}).`),
    );
  } else {
    parts.push(`No projection to the end of life (${num(health.specs.end_of_life_soh, 0)} %) yet: ${health.rul_cycles.reason ?? 'not estimated'}.`);
  }
  return parts.join(' ');
}
