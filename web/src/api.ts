/**
 * Types and fetchers for the battery telemetry API. The shapes follow the API contract; the
 * frontend never assumes more than that contract names.
 */

import type {
  Alarm,
  AlarmEvent,
  BatteryData,
  BatteryHealth,
  BatteryPerformance,
  BatteryPrediction,
  DashboardRecords,
  Kind,
  PackSpecsAnswer,
  RecordOf,
  Specs,
  Thresholds,
} from './generated/records';

// The record, kind, specs, alarm and analytics types are generated from the server's schemas (npm run generate).
export { KINDS } from './generated/records';
export type { Alarm, AlarmEvent, BatteryHealth, Estimate, Kind, PackSpecs, PackSpecsAnswer, RecordOf, Specs, Thresholds } from './generated/records';
export type DataRecord = BatteryData;
export type PerformanceRecord = BatteryPerformance;
export type PredictionRecord = BatteryPrediction;
export type Limits = Thresholds['voltage'];

export interface BatterySummary {
  battery_id: string;
  last_seen: number;
  counts: Partial<Record<Kind, number>>;
  last_seen_by_kind: Partial<Record<Kind, number>>;
}

/** GET /api/dashboard, under the original service's keys. */
export interface Dashboard extends DashboardRecords {
  specs: Specs;
  thresholds: Thresholds;
  /** Server time, Unix seconds. */
  timestamp?: number;
}

export interface AggregateBucket {
  start: number;
  count: number;
  min: Record<string, number>;
  max: Record<string, number>;
  mean: Record<string, number>;
}

export interface Aggregate {
  bucket_seconds: number;
  from: number;
  to: number;
  buckets: AggregateBucket[];
}

/** The API answered with an error status; `status` 0 means it was not reachable at all. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

type Query = Record<string, string | number | undefined>;

export function apiUrl(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== '') params.set(key, String(value));
  }
  const search = params.toString();
  return search === '' ? path : `${path}?${search}`;
}

const unauthorizedListeners = new Set<(detail: string) => void>();

/** Called with the API's message whenever a read answers 401: the session ended or was never there. */
export function onUnauthorized(listener: (detail: string) => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

async function errorOf(response: Response): Promise<ApiError> {
  let detail = response.statusText;
  try {
    const body = (await response.json()) as { detail?: unknown };
    if (typeof body.detail === 'string') detail = body.detail;
  } catch {
    // Not JSON: keep the status text.
  }
  return new ApiError(detail || `HTTP ${response.status}`, response.status);
}

/** fetch that carries the session cookie (same origin only: it is never sent elsewhere). */
async function send(path: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(path, { ...init, credentials: 'same-origin' });
  } catch (error) {
    if (init.signal?.aborted) throw error;
    throw new ApiError('The API is not reachable', 0);
  }
}

async function getJson<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
  const response = await send(apiUrl(path, query), { headers: { Accept: 'application/json' }, signal });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) for (const listener of unauthorizedListeners) listener(error.message);
    throw error;
  }
  return (await response.json()) as T;
}

/** GET /api/session: does reading need a key, and does this browser hold a session? */
export interface SessionStatus {
  key_required: boolean;
  signed_in: boolean;
  /** Unix seconds; null when not signed in. */
  expires_at: number | null;
}

export const fetchSession = (signal?: AbortSignal) => getJson<SessionStatus>('/api/session', undefined, signal);

/** Trades the key for the HttpOnly session cookie; the page never keeps the key. Throws ApiError (401 on a wrong key). */
export async function signIn(key: string): Promise<void> {
  const response = await send('/api/session', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ key }),
  });
  if (!response.ok) throw await errorOf(response);
}

export async function signOut(): Promise<void> {
  const response = await send('/api/session', { method: 'DELETE' });
  if (!response.ok) throw await errorOf(response);
}

export const fetchBatteries = (signal?: AbortSignal) =>
  getJson<{ batteries: BatterySummary[] }>('/api/batteries', undefined, signal).then((body) => body.batteries);

/** Latest record of each kind (of one pack, or of any), with the specs and thresholds. */
export const fetchDashboard = (batteryId?: string, signal?: AbortSignal) =>
  getJson<Dashboard>('/api/dashboard', { battery_id: batteryId }, signal);

/** Newest first, as the API answers; `source`: one producer's records only. */
export const fetchHistory = <K extends Kind>(kind: K, batteryId: string, hours: number, limit: number, signal?: AbortSignal, source?: string) =>
  getJson<RecordOf[K][]>(`/api/${kind}/history`, { battery_id: batteryId, hours, limit, source }, signal);

export const fetchAggregate = (kind: Kind, batteryId: string, hours: number, buckets: number, signal?: AbortSignal) =>
  getJson<Aggregate>(`/api/${kind}/aggregate`, { battery_id: batteryId, hours, buckets }, signal);

export const exportUrl = (kind: Kind, batteryId: string, hours: number, format: 'csv' | 'ndjson' = 'csv') =>
  apiUrl(`/api/${kind}/export`, { hours, battery_id: batteryId, format });

export const streamUrl = (query: { battery_id?: string; kind?: Kind } = {}) => apiUrl('/api/stream', query);

/** The records store's longest look-back (MAX_HOURS of the API), and its largest history page. */
export const MAX_HISTORY_HOURS = 87_600;
export const MAX_HISTORY_LIMIT = 10_000;

/** The `source` of the battery-performance and battery-prediction records the service's analytics writes. */
export const ANALYTICS_SOURCE = 'battery_monitor_analytics';

const batteryPath = (batteryId: string, what: 'health' | 'specs') => `/api/batteries/${encodeURIComponent(batteryId)}/${what}`;

/** Throws ApiError: 404 for a pack the service has no record of, 503 while analytics catches up after a start (or is off). */
export const fetchHealth = (batteryId: string, signal?: AbortSignal) => getJson<BatteryHealth>(batteryPath(batteryId, 'health'), undefined, signal);

export const fetchPackSpecs = (batteryId: string, signal?: AbortSignal) => getJson<PackSpecsAnswer>(batteryPath(batteryId, 'specs'), undefined, signal);

export type AlarmStateFilter = 'open' | 'active' | 'acknowledged' | 'cleared' | 'all';

export interface AlarmQuery {
  state?: AlarmStateFilter;
  battery_id?: string;
  severity?: 'warning' | 'critical';
  /** Unix seconds: alarms open at some moment since then. */
  since?: number;
  limit?: number;
}

/** Newest raised first. */
export const fetchAlarms = (query: AlarmQuery, signal?: AbortSignal) =>
  getJson<{ alarms: Alarm[] }>('/api/alarms', { ...query }, signal).then((body) => body.alarms);

/** Acknowledges an open alarm; throws ApiError (409 when it cleared or was acknowledged meanwhile, 401 without the write key). */
export async function acknowledgeAlarm(id: string, by: string, note: string): Promise<Alarm & { events: AlarmEvent[] }> {
  const response = await send(`/api/alarms/${encodeURIComponent(id)}/acknowledge`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(note === '' ? { by } : { by, note }),
  });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as Alarm & { events: AlarmEvent[] };
}
