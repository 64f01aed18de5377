/**
 * One pack's analytics state and how a reading advances it: pure functions over plain JSON, so that
 * the state is stored as it is and a restart continues from it (docs/analytics.md has the methods).
 *
 * Sign convention: pack_current is positive while charging and negative while discharging, as the
 * kinds table documents it and the simulator and the original's producers send it.
 *
 * Per reading, in timestamp order:
 * - charge and energy: the trapezoid between it and the previous reading, split where the current
 *   crosses zero into what went in and what went out; two readings further apart than the maximum
 *   gap are not integrated (the gap is counted, and the state of charge is unknown until the next anchor);
 * - state of charge: coulomb counting from the last anchor (full: 100 %, empty: 0 %);
 * - capacity: between two anchors at least 50 points of state of charge apart with no gap between
 *   them, the net charge counted over the state of charge they span; each such segment adds a point
 *   to two weighted least-squares fits (capacity against charge throughput, and against time), from
 *   which health and remaining life are read (estimates.ts).
 */

/** A pack's specifications as analytics uses them: the specs file's defaults, or the pack's overrides. */
export interface PackSpecs {
  nominal_capacity_ah: number;
  cell_count: number;
  /** Pack volts at or above which, with the current tapered, the pack is full. */
  full_charge_voltage: number;
  /** Pack volts at or below which, discharging or at rest, the pack is empty. */
  empty_voltage: number;
  /** State of health (percent) at which the pack's life ends. */
  end_of_life_soh: number;
}

export interface AnalyticsSettings {
  /** Readings further apart than this (seconds) are not integrated. */
  maxGapSeconds: number;
  /** Full needs |current| at or below this fraction of the nominal capacity (C/20: 0.05). */
  taperC: number;
}

/** Sums of a weighted least-squares fit of y against x; older points weigh less (FIT_MEMORY per segment). */
export interface FitSums {
  w: number;
  x: number;
  y: number;
  xx: number;
  xy: number;
  yy: number;
  /** Points behind it (unweighted count). */
  n: number;
}

export type AnchorType = 'full' | 'empty';

export interface Anchor {
  type: AnchorType;
  /** State of charge it sets (0..1). */
  soc: number;
  at: number;
  /** Net charge since the anchor, Ah (positive: charged). */
  net_ah: number;
  /** Charge moved either way since the anchor, Ah. */
  moved_ah: number;
  /** A gap since the anchor: the net charge is not known. */
  broken: boolean;
  /** Sum and count of cell_temp readings since the anchor. */
  temp_sum: number;
  temp_n: number;
}

export interface Segment {
  /** Timestamp of the anchor that closed it. */
  at: number;
  direction: 'charge' | 'discharge';
  capacity_ah: number;
  /** Equivalent full cycles at its end, by the nominal capacity at the time. */
  throughput_ah: number;
  mean_temp: number | null;
}

export interface Reading {
  timestamp: number;
  pack_voltage: number;
  pack_current: number;
  /** NaN when the reading lacks it. */
  cell_temp: number;
}

export interface PackAnalytics {
  battery_id: string;
  /** Timestamp of the first reading integrated. */
  first_at: number | null;
  /** Timestamp of the newest reading taken: rows older than it are backfill. */
  newest: number | null;
  last: { pack_voltage: number; pack_current: number; cell_temp: number | null } | null;
  ah_in: number;
  ah_out: number;
  wh_in: number;
  wh_out: number;
  readings: number;
  gaps: number;
  gap_seconds: number;
  /** Rows older than the newest taken: stored, not integrated. */
  backfill: number;
  anchor: Anchor | null;
  anchors: number;
  /** Coulomb-counted state of charge (0..1, not clamped: drift shows), null before the first anchor or after a gap. */
  soc: number | null;
  segments: number;
  /** Segments refused: a capacity outside 20-150 % of nominal, or charge counted the wrong way. */
  rejected_segments: number;
  last_segment: Segment | null;
  /** Capacity (Ah) against charge throughput / 2 (Ah): x / nominal is equivalent full cycles. */
  fit_throughput: FitSums;
  /** Capacity (Ah) against hours since first_at. */
  fit_hours: FitSums;
  /** Capacity now (Ah) as last estimated: coulomb counting divides by it. Null before the first segment. */
  capacity_ah: number | null;
  /** Server time of the last reading taken. */
  updated_at: number | null;
}

/** Each segment's weight in the fits decays by this per newer segment: about the last 100 segments count. */
export const FIT_MEMORY = 0.99;
/** Capacities outside this fraction of nominal are a measurement gone wrong, not a pack. */
const MIN_CAPACITY_FRACTION = 0.2;
const MAX_CAPACITY_FRACTION = 1.5;
/** A segment must span at least this much state of charge between its anchors. */
export const MIN_SEGMENT_SPAN = 0.5;

const emptyFit = (): FitSums => ({ w: 0, x: 0, y: 0, xx: 0, xy: 0, yy: 0, n: 0 });

export function newPackAnalytics(batteryId: string): PackAnalytics {
  return {
    battery_id: batteryId,
    first_at: null,
    newest: null,
    last: null,
    ah_in: 0,
    ah_out: 0,
    wh_in: 0,
    wh_out: 0,
    readings: 0,
    gaps: 0,
    gap_seconds: 0,
    backfill: 0,
    anchor: null,
    anchors: 0,
    soc: null,
    segments: 0,
    rejected_segments: 0,
    last_segment: null,
    fit_throughput: emptyFit(),
    fit_hours: emptyFit(),
    capacity_ah: null,
    updated_at: null,
  };
}

/**
 * The trapezoid between two samples a and b over dt, split at the zero crossing: [positive area,
 * negative area as a positive number].
 */
export function splitTrapezoid(a: number, b: number, dt: number): [number, number] {
  if (a >= 0 && b >= 0) return [((a + b) / 2) * dt, 0];
  if (a <= 0 && b <= 0) return [0, (-(a + b) / 2) * dt];
  const crossing = (dt * a) / (a - b);
  const first = (a * crossing) / 2;
  const second = (b * (dt - crossing)) / 2;
  return a > 0 ? [first, -second] : [second, -first];
}

/** The part of the trapezoid from a to b over dt above zero. */
function positiveArea(a: number, b: number, dt: number): number {
  if (a >= 0 && b >= 0) return ((a + b) / 2) * dt;
  if (a <= 0 && b <= 0) return 0;
  // One side of zero each: the triangle on the positive side.
  return a > 0 ? (a * ((dt * a) / (a - b))) / 2 : (b * ((dt * b) / (b - a))) / 2;
}

/**
 * Takes one reading, newer than `state.newest` (the caller skips and counts backfill). `now`: server
 * time, kept as updated_at. Answers true when a segment was accepted: capacity, health and remaining
 * life have new values.
 */
export function advance(state: PackAnalytics, reading: Reading, specs: PackSpecs, settings: AnalyticsSettings, now: number): boolean {
  const { timestamp, pack_voltage: voltage, pack_current: current } = reading;
  const temp = Number.isFinite(reading.cell_temp) ? reading.cell_temp : null;
  let segment = false;
  const previous = state.last;
  if (previous !== null && state.newest !== null) {
    const dt = timestamp - state.newest;
    if (dt > settings.maxGapSeconds) {
      state.gaps++;
      state.gap_seconds += dt;
      // The charge across the gap is unknown: so is the state of charge, and the segment under way.
      state.soc = null;
      if (state.anchor !== null) state.anchor.broken = true;
    } else if (dt > 0) {
      // In place, no arrays: this runs for every reading at full ingest rate.
      const a = previous.pack_current;
      const inAh = positiveArea(a, current, dt) / 3600;
      const outAh = positiveArea(-a, -current, dt) / 3600;
      const pa = previous.pack_voltage * a;
      const pb = voltage * current;
      state.ah_in += inAh;
      state.ah_out += outAh;
      state.wh_in += positiveArea(pa, pb, dt) / 3600;
      state.wh_out += positiveArea(-pa, -pb, dt) / 3600;
      const net = inAh - outAh;
      if (state.soc !== null) state.soc += net / (state.capacity_ah ?? specs.nominal_capacity_ah);
      const anchor = state.anchor;
      if (anchor !== null) {
        anchor.net_ah += net;
        anchor.moved_ah += inAh + outAh;
      }
    }
  }
  if (state.anchor !== null && temp !== null) {
    state.anchor.temp_sum += temp;
    state.anchor.temp_n++;
  }
  state.first_at ??= timestamp;
  state.newest = timestamp;
  if (previous === null) state.last = { pack_voltage: voltage, pack_current: current, cell_temp: temp };
  else {
    previous.pack_voltage = voltage;
    previous.pack_current = current;
    previous.cell_temp = temp;
  }
  state.readings++;
  state.updated_at = now;

  const taper = settings.taperC * specs.nominal_capacity_ah;
  if (voltage >= specs.full_charge_voltage && Math.abs(current) <= taper) {
    segment = anchorAt(state, 'full', 1, timestamp, specs);
  } else if (voltage <= specs.empty_voltage && current <= taper) {
    segment = anchorAt(state, 'empty', 0, timestamp, specs);
  }
  return segment;
}

/** Sets the state of charge at an anchor; closes a segment when the previous anchor is far enough away. */
function anchorAt(state: PackAnalytics, type: AnchorType, soc: number, at: number, specs: PackSpecs): boolean {
  const previous = state.anchor;
  let accepted = false;
  if (previous !== null && !previous.broken && Math.abs(soc - previous.soc) >= MIN_SEGMENT_SPAN) {
    const span = soc - previous.soc;
    const capacity = previous.net_ah / span;
    const nominal = specs.nominal_capacity_ah;
    if (capacity >= MIN_CAPACITY_FRACTION * nominal && capacity <= MAX_CAPACITY_FRACTION * nominal) {
      const throughput = (state.ah_in + state.ah_out) / 2;
      const hours = (at - (state.first_at ?? at)) / 3600;
      addPoint(state.fit_throughput, throughput, capacity);
      addPoint(state.fit_hours, hours, capacity);
      state.segments++;
      state.last_segment = {
        at,
        direction: span > 0 ? 'charge' : 'discharge',
        capacity_ah: capacity,
        throughput_ah: throughput,
        mean_temp: previous.temp_n > 0 ? previous.temp_sum / previous.temp_n : null,
      };
      state.capacity_ah = capacityNow(state, throughput) ?? capacity;
      accepted = true;
    } else {
      state.rejected_segments++;
    }
  }
  state.anchor = { type, soc, at, net_ah: 0, moved_ah: 0, broken: false, temp_sum: 0, temp_n: 0 };
  state.anchors++;
  state.soc = soc;
  return accepted;
}

function addPoint(fit: FitSums, x: number, y: number): void {
  fit.w = fit.w * FIT_MEMORY + 1;
  fit.x = fit.x * FIT_MEMORY + x;
  fit.y = fit.y * FIT_MEMORY + y;
  fit.xx = fit.xx * FIT_MEMORY + x * x;
  fit.xy = fit.xy * FIT_MEMORY + x * y;
  fit.yy = fit.yy * FIT_MEMORY + y * y;
  fit.n++;
}

/** A straight line fitted by weighted least squares, with what its intervals need. */
export interface Line {
  intercept: number;
  slope: number;
  /** Residual variance. */
  variance: number;
  /** Effective number of points (sum of weights). */
  weight: number;
  meanX: number;
  /** Weighted sum of squares of x about its mean. */
  sxx: number;
  points: number;
}

/** Fewer segments than this give no fit: a line through two points says nothing of its error. */
export const MIN_FIT_POINTS = 3;

export function lineOf(fit: FitSums): Line | null {
  if (fit.n < MIN_FIT_POINTS || fit.w <= 2) return null;
  const meanX = fit.x / fit.w;
  const meanY = fit.y / fit.w;
  const sxx = fit.xx - fit.w * meanX * meanX;
  const sxy = fit.xy - fit.w * meanX * meanY;
  const syy = fit.yy - fit.w * meanY * meanY;
  if (!(sxx > 1e-9 * Math.max(1, fit.xx))) return null;
  const slope = sxy / sxx;
  const intercept = meanY - slope * meanX;
  const variance = Math.max(0, (syy - slope * sxy) / (fit.w - 2));
  return { intercept, slope, variance, weight: fit.w, meanX, sxx, points: fit.n };
}

/** Capacity (Ah) at a throughput from the fit; null without one. */
export function capacityNow(state: PackAnalytics, throughput: number): number | null {
  const line = lineOf(state.fit_throughput);
  return line === null ? null : line.intercept + line.slope * throughput;
}
