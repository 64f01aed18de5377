/**
 * The AnalyticsStore interface: where each pack's analytics state and its spec overrides live.
 * sqlite-analytics-store.ts (DATA_DIR/analytics.sqlite) and mongodb-analytics-store.ts (collections
 * beside the records) implement it; one conformance suite (test/analytics/analytics-store-conformance.ts)
 * runs against both.
 *
 * A pack's state is written whole, as one row or document: a restart continues from the newest
 * state of each pack that was written, and reads back from the records store what came after it.
 */
import type { PackAnalytics } from './pack-state.js';
import type { SpecOverrides } from './pack-specs.js';

export interface PackOverrides {
  battery_id: string;
  overrides: SpecOverrides;
  /** Server time of the PUT. */
  updated_at: number;
}

export interface LoadedAnalytics {
  packs: PackAnalytics[];
  specs: PackOverrides[];
  /** Server time of the last save; undefined on a store never written to. */
  writtenAt?: number;
}

export interface AnalyticsStore {
  readonly name: 'sqlite' | 'mongodb';
  load(): Promise<LoadedAnalytics>;
  /** One pack's state as stored; undefined when none is (an instance taking the pack over starts from it). */
  loadPack(batteryId: string): Promise<PackAnalytics | undefined>;
  /** Stores these packs' states, each replacing the one stored, and the time of the save. */
  savePacks(packs: readonly PackAnalytics[], writtenAt: number): Promise<void>;
  /** Every pack's overrides as stored: an instance reloads them when another changed them (cluster/cluster-sync.ts). */
  loadSpecs(): Promise<PackOverrides[]>;
  /** Replaces a pack's overrides; none left (all defaults) removes them. */
  putSpecs(specs: PackOverrides): Promise<void>;
  close(): Promise<void>;
}
