import { createContext, useContext, useEffect, useState, useSyncExternalStore } from 'react';
import type { AlarmsSnapshot, AlarmsStore } from './alarms';
import type { FleetSnapshot, FleetStore } from './fleet';
import type { ConnectionState, LiveFeed } from './live';

export interface AppServices {
  feed: LiveFeed;
  fleet: FleetStore;
  alarms: AlarmsStore;
}

export const ServicesContext = createContext<AppServices | null>(null);

export function useServices(): AppServices {
  const services = useContext(ServicesContext);
  if (!services) throw new Error('ServicesContext is missing');
  return services;
}

export function useFleet(): FleetSnapshot {
  const { fleet } = useServices();
  return useSyncExternalStore(fleet.subscribe, fleet.getSnapshot);
}

export function useAlarms(): AlarmsSnapshot {
  const { alarms } = useServices();
  return useSyncExternalStore(alarms.subscribe, alarms.getSnapshot);
}

export function useConnection(): ConnectionState {
  const { feed } = useServices();
  return useSyncExternalStore((listener) => feed.onState(listener), feed.getState);
}

/** Browser time in Unix seconds, updated every `everyMs`, so "4 s ago" keeps counting. */
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(() => Date.now() / 1000);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now() / 1000), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

export type Route = { view: 'fleet' } | { view: 'alarms' } | { view: 'pack'; id: string; range: RangeKey | undefined };

export const RANGES = {
  '15m': { label: '15 min', hours: 0.25 },
  '1h': { label: '1 h', hours: 1 },
  '24h': { label: '24 h', hours: 24 },
  '7d': { label: '7 d', hours: 24 * 7 },
  '30d': { label: '30 d', hours: 24 * 30 },
} as const;
export type RangeKey = keyof typeof RANGES;
export const isRangeKey = (value: string | null): value is RangeKey => value !== null && value in RANGES;

export function parseHash(hash: string): Route {
  if (hash === '#/alarms') return { view: 'alarms' };
  const match = /^#\/pack\/([^?]+)(?:\?(.*))?$/.exec(hash);
  if (!match) return { view: 'fleet' };
  let id: string;
  try {
    id = decodeURIComponent(match[1] ?? '');
  } catch {
    return { view: 'fleet' };
  }
  const range = new URLSearchParams(match[2] ?? '').get('range');
  return { view: 'pack', id, range: isRangeKey(range) ? range : undefined };
}

export const packHref = (id: string, range?: RangeKey) =>
  `#/pack/${encodeURIComponent(id)}${range ? `?range=${range}` : ''}`;

export function useRoute(): Route {
  const [hash, setHash] = useState(() => window.location.hash);
  useEffect(() => {
    const onChange = () => setHash(window.location.hash);
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return parseHash(hash);
}
