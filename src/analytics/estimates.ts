/**
 * The estimates a pack's state gives, as GET /api/batteries/{battery_id}/health answers them: each
 * a value with its interval where it has one, the segments behind it, its method, and, when it
 * cannot be estimated yet, null with the reason. Computed when asked, from the state and the specs
 * in force then: a changed nominal capacity changes cycles and health at once.
 */
import { lineOf, type Line, type PackAnalytics, type PackSpecs } from './pack-state.js';

export interface Estimate {
  value: number | null;
  /** Bounds of a 95 % interval; null where the estimate has none. */
  low: number | null;
  high: number | null;
  unit: string;
  /** Capacity segments behind the estimate; null where it rests on the readings alone. */
  segments: number | null;
  method: string;
  /** Why the value is null. */
  reason: string | null;
}

export interface Health {
  battery_id: string;
  soh: Estimate;
  capacity_ah: Estimate;
  equivalent_cycles: Estimate;
  ah_in: Estimate;
  ah_out: Estimate;
  wh_in: Estimate;
  wh_out: Estimate;
  soc: Estimate;
  rul_cycles: Estimate;
  rul_hours: Estimate;
  readings: number;
  gaps: number;
  gap_seconds: number;
  backfill_rows: number;
  anchors: number;
  rejected_segments: number;
  /** Timestamp of the newest reading taken. */
  data_until: number | null;
  /** Server time the estimates last changed; null before any reading. */
  updated_at: number | null;
  specs: PackSpecs;
}

/** Two-sided 95 %. */
const Z = 1.96;
/** State of charge at an anchor is known to about this much (the anchor's voltage and taper levels). */
const SOC_ANCHOR_ERROR = 0.01;
/** Current-sensor gain error assumed: this fraction of the charge counted since the anchor. */
const SOC_GAIN_ERROR = 0.01;
/** Current-sensor offset assumed: this fraction of the nominal capacity per hour (C/500). */
const SOC_OFFSET_PER_HOUR = 0.002;

export const METHODS = {
  counter: 'trapezoidal integration of pack_current (and pack_voltage x pack_current), positive current is charge; gaps over ANALYTICS_MAX_GAP_SECONDS not integrated',
  cycles: '(Ah in + Ah out) / (2 x nominal capacity)',
  soc: 'coulomb counting from the last anchor (full: voltage at or above full_charge_voltage with the current tapered; empty: at or below empty_voltage)',
  capacity: 'charge counted between anchors at least 50 % of state of charge apart; weighted least-squares fit against throughput, read at the present',
  soh: 'capacity / nominal capacity',
  rulCycles: 'the capacity fit against equivalent cycles extrapolated to the end-of-life state of health',
  rulHours: 'the capacity fit against time extrapolated to the end-of-life state of health',
} as const;

const round = (value: number, digits = 4) => Math.round(value * 10 ** digits) / 10 ** digits;
const maybe = (value: number | null, digits?: number) => (value === null ? null : round(value, digits));

function estimate(value: number | null, unit: string, method: string, extra: Partial<Estimate> = {}): Estimate {
  return { value: maybe(value), low: null, high: null, unit, segments: null, method, reason: null, ...extra };
}

const missing = (unit: string, method: string, reason: string, segments: number | null = null): Estimate => ({
  value: null,
  low: null,
  high: null,
  unit,
  segments,
  method,
  reason,
});

/**
 * A segment's ends are where the voltage says full or empty: within about this fraction of the true
 * ends (the last percent below the cut-off, the taper's last charge), a bias no number of segments
 * averages away. It widens the capacity's interval beside the fit's own error.
 */
const SEGMENT_END_ERROR = 0.01;

/** The line's value at x with the half-width of its 95 % interval (the fit's error and the segments' ends). */
function at(line: Line, x: number): { value: number; margin: number } {
  const value = line.intercept + line.slope * x;
  const se = Math.sqrt(line.variance * (1 / line.weight + (x - line.meanX) ** 2 / line.sxx));
  return { value, margin: Z * se + SEGMENT_END_ERROR * Math.abs(value) };
}

/**
 * When the fitted capacity reaches `end` (Ah), in x units from `x`: the value with an interval from
 * the fit's uncertainty at x and of its slope; the upper bound is null when the fit cannot rule out
 * no fade at all.
 */
function remaining(line: Line, x: number, end: number): { value: number; low: number; high: number | null } | string {
  if (!(line.slope < 0)) return 'no capacity fade measured yet';
  const now = at(line, x);
  const slopeMargin = Z * Math.sqrt(line.variance / line.sxx);
  const value = Math.max(0, (now.value - end) / -line.slope);
  const low = Math.max(0, (now.value - now.margin - end) / (-line.slope + slopeMargin));
  const flattest = line.slope + slopeMargin;
  const high = flattest < 0 ? Math.max(0, (now.value + now.margin - end) / -flattest) : null;
  return { value, low: Math.min(low, value), high: high === null ? null : Math.max(high, value) };
}

export function healthOf(state: PackAnalytics, specs: PackSpecs): Health {
  const nominal = specs.nominal_capacity_ah;
  const throughput = (state.ah_in + state.ah_out) / 2;
  const segments = state.segments;
  const noSegment =
    segments === 0
      ? state.anchors === 0
        ? 'no anchor yet: the pack has not been seen full or empty'
        : 'no segment yet: a capacity needs a charge or discharge between full and empty without a gap'
      : null;

  // Capacity: the fit read at the present throughput; with fewer segments, the last one alone.
  const line = lineOf(state.fit_throughput);
  let capacity: Estimate;
  if (line !== null) {
    const { value, margin } = at(line, throughput);
    capacity = estimate(value, 'Ah', METHODS.capacity, { low: round(value - margin), high: round(value + margin), segments });
  } else if (state.last_segment !== null) {
    capacity = estimate(state.last_segment.capacity_ah, 'Ah', METHODS.capacity, {
      segments,
      reason: null,
    });
  } else {
    capacity = missing('Ah', METHODS.capacity, noSegment!, segments);
  }
  const percent = (value: number | null) => (value === null ? null : round((value / nominal) * 100, 3));
  const soh: Estimate =
    capacity.value === null
      ? missing('%', METHODS.soh, capacity.reason!, segments)
      : { ...capacity, value: percent(capacity.value), low: percent(capacity.low), high: percent(capacity.high), unit: '%', method: METHODS.soh };

  let soc: Estimate;
  if (state.soc === null) {
    soc = missing(
      '%',
      METHODS.soc,
      state.anchors === 0 ? 'no anchor yet: the pack has not been seen full or empty' : 'a gap in the readings since the last anchor: unknown until the next one',
    );
  } else {
    const anchor = state.anchor!;
    const capacityNow = state.capacity_ah ?? nominal;
    const hours = ((state.newest ?? anchor.at) - anchor.at) / 3600;
    const margin = SOC_ANCHOR_ERROR + (SOC_GAIN_ERROR * anchor.moved_ah) / capacityNow + SOC_OFFSET_PER_HOUR * hours;
    const value = Math.min(1, Math.max(0, state.soc));
    soc = estimate(value * 100, '%', METHODS.soc, {
      low: round(Math.max(0, value - margin) * 100),
      high: round(Math.min(1, value + margin) * 100),
    });
  }

  const end = (specs.end_of_life_soh / 100) * nominal;
  let rulCycles: Estimate;
  if (line === null) rulCycles = missing('cycles', METHODS.rulCycles, noSegment ?? 'fewer than 3 capacity segments', segments);
  else {
    const r = remaining(line, throughput, end);
    rulCycles =
      typeof r === 'string'
        ? missing('cycles', METHODS.rulCycles, r, segments)
        : estimate(r.value / nominal, 'cycles', METHODS.rulCycles, { low: round(r.low / nominal), high: maybe(r.high === null ? null : r.high / nominal), segments });
  }
  const hoursLine = lineOf(state.fit_hours);
  let rulHours: Estimate;
  if (hoursLine === null) rulHours = missing('h', METHODS.rulHours, noSegment ?? 'fewer than 3 capacity segments', segments);
  else {
    const hoursNow = ((state.newest ?? 0) - (state.first_at ?? 0)) / 3600;
    const r = remaining(hoursLine, hoursNow, end);
    rulHours =
      typeof r === 'string'
        ? missing('h', METHODS.rulHours, r, segments)
        : estimate(r.value, 'h', METHODS.rulHours, { low: round(r.low), high: maybe(r.high), segments });
  }

  const none = state.readings === 0 ? 'no readings of this pack taken yet' : null;
  const counter = (value: number, unit: string) => (none === null ? estimate(value, unit, METHODS.counter) : missing(unit, METHODS.counter, none));
  return {
    battery_id: state.battery_id,
    soh,
    capacity_ah: capacity,
    equivalent_cycles: none === null ? estimate(throughput / nominal, 'cycles', METHODS.cycles) : missing('cycles', METHODS.cycles, none),
    ah_in: counter(state.ah_in, 'Ah'),
    ah_out: counter(state.ah_out, 'Ah'),
    wh_in: counter(state.wh_in, 'Wh'),
    wh_out: counter(state.wh_out, 'Wh'),
    soc,
    rul_cycles: rulCycles,
    rul_hours: rulHours,
    readings: state.readings,
    gaps: state.gaps,
    gap_seconds: round(state.gap_seconds, 3),
    backfill_rows: state.backfill,
    anchors: state.anchors,
    rejected_segments: state.rejected_segments,
    data_until: state.newest,
    updated_at: state.updated_at,
    specs,
  };
}
