/**
 * Chart data for one pack over a chosen range, kept live. Short ranges use raw history; longer
 * ones use server-side aggregates (min/max/mean per time bucket) so a 30-day chart never ships
 * raw rows. Live readings are folded into the same shape: appended as points, or merged into the
 * bucket they fall in.
 */
import { useEffect, useRef, useState } from 'react';
import {
  fetchAggregate,
  fetchHistory,
  type DataRecord,
  type Kind,
  type PerformanceRecord,
  type PredictionRecord,
  type RecordOf,
} from './api';
import { RANGES, useServices, type RangeKey } from './hooks';

export const DATA_FIELDS = ['pack_voltage', 'pack_current', 'cell_temp'] as const;
export type DataField = (typeof DATA_FIELDS)[number];

/** Buckets asked of the aggregate endpoint: about one per pixel of a wide chart (the API allows 2,000). */
const BUCKETS = 1000;
/** Raw history is fetched for ranges up to this many hours. */
const RAW_MAX_HOURS = 0.25;
/** The API's largest history page. */
const RAW_LIMIT = 10_000;

export interface Readings {
  phase: 'loading' | 'ready' | 'error';
  error?: string;
  /** null: raw readings; else the width of a bucket in seconds. */
  bucketSeconds: number | null;
  x: number[];
  counts: number[];
  mean: Record<DataField, number[]>;
  min: Record<DataField, number[]> | null;
  max: Record<DataField, number[]> | null;
  /** Bumped on every change, so charts know to redraw. */
  version: number;
}

const fieldArrays = (): Record<DataField, number[]> => ({ pack_voltage: [], pack_current: [], cell_temp: [] });

function emptyReadings(bucketSeconds: number | null): Readings {
  return {
    phase: 'loading',
    bucketSeconds,
    x: [],
    counts: [],
    mean: fieldArrays(),
    min: bucketSeconds === null ? null : fieldArrays(),
    max: bucketSeconds === null ? null : fieldArrays(),
    version: 0,
  };
}

/** Index of the first x >= value. */
function lowerBound(xs: number[], value: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((xs[mid] as number) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Adds a reading in place; the caller bumps the version. */
function addReading(r: Readings, record: DataRecord): void {
  const bs = r.bucketSeconds;
  const t = bs === null ? record.timestamp : Math.floor(record.timestamp / bs) * bs + bs / 2;
  const i = lowerBound(r.x, t);
  if (bs !== null && r.x[i] === t && r.min && r.max) {
    const n = (r.counts[i] as number) + 1;
    r.counts[i] = n;
    for (const f of DATA_FIELDS) {
      const v = record[f];
      r.mean[f][i] = (r.mean[f][i] as number) + (v - (r.mean[f][i] as number)) / n;
      r.min[f][i] = Math.min(r.min[f][i] as number, v);
      r.max[f][i] = Math.max(r.max[f][i] as number, v);
    }
    return;
  }
  r.x.splice(i, 0, t);
  r.counts.splice(i, 0, 1);
  for (const f of DATA_FIELDS) {
    r.mean[f].splice(i, 0, record[f]);
    r.min?.[f].splice(i, 0, record[f]);
    r.max?.[f].splice(i, 0, record[f]);
  }
}

/** Drops what has slid out of the window. */
function trim(r: Readings, from: number): void {
  const n = lowerBound(r.x, from);
  if (n === 0) return;
  r.x.splice(0, n);
  r.counts.splice(0, n);
  for (const f of DATA_FIELDS) {
    r.mean[f].splice(0, n);
    r.min?.[f].splice(0, n);
    r.max?.[f].splice(0, n);
  }
}

export function useReadings(batteryId: string, rangeKey: RangeKey, clockOffset: number): Readings {
  const { feed } = useServices();
  const hours: number = RANGES[rangeKey].hours;
  const raw = hours <= RAW_MAX_HOURS;
  const [state, setState] = useState<Readings>(() => emptyReadings(null));
  const [reloads, setReloads] = useState(0);
  // Read at the time of use: a better clock estimate must not reload the range.
  const offset = useRef(clockOffset);
  offset.current = clockOffset;

  useEffect(() => feed.onReconnect(() => setReloads((n) => n + 1)), [feed]);

  useEffect(() => {
    const controller = new AbortController();
    let current: Readings | null = null;
    // Live readings that arrive while the range loads are held and applied after it.
    const pending: DataRecord[] = [];
    const seen = new Set<string>();
    const windowStart = () => Date.now() / 1000 - offset.current - hours * 3600;
    const publish = () => {
      if (!current) return;
      current = { ...current, version: current.version + 1 };
      setState(current);
    };

    const off = feed.onRecord((event) => {
      if (event.kind !== 'battery-data' || event.record.battery_id !== batteryId) return;
      if (!current) {
        pending.push(event.record);
        return;
      }
      if (seen.has(event.record._id)) return;
      seen.add(event.record._id);
      addReading(current, event.record);
      trim(current, windowStart() - (current.bucketSeconds ?? 0));
      publish();
    });

    setState((previous) => ({ ...emptyReadings(raw ? null : 0), version: previous.version + 1 }));
    (async () => {
      try {
        let loaded: Readings;
        let coveredUntil = -Infinity;
        if (raw) {
          const records = await fetchHistory('battery-data', batteryId, hours, RAW_LIMIT, controller.signal);
          loaded = emptyReadings(null);
          const from = windowStart();
          for (let i = records.length - 1; i >= 0; i--) {
            const record = records[i] as DataRecord;
            if (record.timestamp < from) continue;
            seen.add(record._id);
            loaded.x.push(record.timestamp);
            loaded.counts.push(1);
            for (const f of DATA_FIELDS) loaded.mean[f].push(record[f]);
          }
        } else {
          const aggregate = await fetchAggregate('battery-data', batteryId, hours, BUCKETS, controller.signal);
          const bs = aggregate.bucket_seconds;
          loaded = emptyReadings(bs);
          for (const bucket of aggregate.buckets) {
            loaded.x.push(bucket.start + bs / 2);
            loaded.counts.push(bucket.count);
            for (const f of DATA_FIELDS) {
              loaded.mean[f].push(bucket.mean[f] ?? Number.NaN);
              loaded.min?.[f].push(bucket.min[f] ?? Number.NaN);
              loaded.max?.[f].push(bucket.max[f] ?? Number.NaN);
            }
          }
          coveredUntil = aggregate.to;
        }
        if (controller.signal.aborted) return;
        loaded.phase = 'ready';
        loaded.version = Date.now();
        current = loaded;
        for (const record of pending) {
          if (seen.has(record._id) || record.timestamp < coveredUntil) continue;
          seen.add(record._id);
          addReading(current, record);
        }
        publish();
      } catch (error) {
        if (controller.signal.aborted) return;
        setState((previous) => ({ ...previous, phase: 'error', error: (error as Error).message, version: previous.version + 1 }));
      }
    })();

    return () => {
      controller.abort();
      off();
    };
  }, [feed, batteryId, hours, raw, reloads]);

  return state;
}

export type TrendKind = Exclude<Kind, 'battery-data'>;

/** Performance or prediction records, oldest first, kept live: these come seldom, so raw rows are fine. */
export function useTrend<K extends TrendKind>(kind: K, batteryId: string, hours: number): { records: RecordOf[K][]; error?: string } {
  const { feed } = useServices();
  const [state, setState] = useState<{ records: RecordOf[K][]; error?: string }>({ records: [] });
  const [reloads, setReloads] = useState(0);
  useEffect(() => feed.onReconnect(() => setReloads((n) => n + 1)), [feed]);

  useEffect(() => {
    const controller = new AbortController();
    let records: RecordOf[K][] | null = null;
    const pending: RecordOf[K][] = [];
    const add = (list: RecordOf[K][], record: RecordOf[K]) => {
      if (list.some((r) => r._id === record._id)) return list;
      const next = [...list];
      next.splice(lowerBound(next.map((r) => r.timestamp), record.timestamp + 1e-9), 0, record);
      return next;
    };
    const off = feed.onRecord((event) => {
      if (event.kind !== kind || event.record.battery_id !== batteryId) return;
      const record = event.record as RecordOf[K];
      if (records === null) pending.push(record);
      else {
        records = add(records, record);
        setState({ records });
      }
    });
    setState({ records: [] });
    fetchHistory(kind, batteryId, hours, 500, controller.signal)
      .then((newestFirst) => {
        let list = [...newestFirst].reverse();
        for (const record of pending) list = add(list, record);
        records = list;
        setState({ records: list });
      })
      .catch((error: Error) => {
        if (!controller.signal.aborted) setState({ records: [], error: error.message });
      });
    return () => {
      controller.abort();
      off();
    };
  }, [feed, kind, batteryId, hours, reloads]);

  return state;
}

export type { PerformanceRecord, PredictionRecord };
