/**
 * Per-cell readings (cell_voltages, cell_temps of a battery-data record): the figures the pack
 * view's Cells section shows, and which cells are outliers.
 *
 * An outlier lies further from the pack's median than the larger of two limits:
 * - 3.5 robust standard deviations, the robust standard deviation being 1.4826 × the median absolute
 *   deviation (MAD). This is Iglewicz and Hoaglin's modified z-score above 3.5: the median and the
 *   MAD are not pulled by the outliers themselves, as a mean and a standard deviation would be, so one
 *   weak cell among 96 stands out instead of widening the limit that should catch it.
 * - a floor (20 mV, 2 °C): cells reported in whole millivolts are often nearly all equal, which
 *   makes the MAD 0 or 1 mV, and a cell 3 mV off would then count; a balancer does not act on that.
 *   20 mV is well under the default cell-imbalance warning (50 mV between the highest and lowest
 *   cell, docs/alarms.md), so a cell drifting away can be marked here before that alarm fires.
 */
import { num } from './format';

/** How a per-cell quantity is shown and judged. */
export interface CellQuantity {
  key: 'voltage' | 'temperature';
  title: string;
  /** What one bar is: a cell's voltage; a temperature may come from a sensor shared by cells. */
  item: 'Cell' | 'Sensor';
  unit: string;
  digits: number;
  /** Differences (delta, distance from the median) in their own unit: millivolts for volts. */
  diffUnit: string;
  diffScale: number;
  /** The outlier limit never goes below this, in `unit`. */
  floor: number;
  color: string;
}

export const CELL_VOLTAGE: CellQuantity = {
  key: 'voltage',
  title: 'Cell voltages',
  item: 'Cell',
  unit: 'V',
  digits: 3,
  diffUnit: 'mV',
  diffScale: 1000,
  floor: 0.02,
  color: '#1d4ed8',
};

export const CELL_TEMPERATURE: CellQuantity = {
  key: 'temperature',
  title: 'Cell temperatures',
  item: 'Sensor',
  unit: '°C',
  digits: 1,
  diffUnit: '°C',
  diffScale: 1,
  floor: 2,
  color: '#0f766e',
};

/** The MAD times this estimates the standard deviation of normally spread values. */
const MAD_TO_SIGMA = 1.4826;
/** Robust standard deviations from the median beyond which a value is an outlier. */
export const OUTLIER_Z = 3.5;

export interface CellOutlier {
  /** 1-based, as cells are numbered on a pack. */
  number: number;
  value: number;
  /** value − median, in the quantity's unit. */
  fromMedian: number;
}

export interface CellStats {
  values: readonly number[];
  median: number;
  min: number;
  max: number;
  /** 1-based numbers of the cells holding the min and the max (the first of equals). */
  minNumber: number;
  maxNumber: number;
  /** max − min. */
  delta: number;
  /** Half-width of the band around the median inside which a cell is not an outlier. */
  limit: number;
  /** Whether each value (by index) is an outlier. */
  outlier: boolean[];
  outliers: CellOutlier[];
}

function medianOf(sorted: readonly number[]): number {
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

const ascending = (a: number, b: number) => a - b;

/** The figures of one non-empty array of readings (the API never answers an empty one). */
export function cellStats(values: readonly number[], quantity: CellQuantity): CellStats {
  const median = medianOf([...values].sort(ascending));
  const mad = medianOf(values.map((value) => Math.abs(value - median)).sort(ascending));
  const limit = Math.max(OUTLIER_Z * MAD_TO_SIGMA * mad, quantity.floor);
  let minIndex = 0;
  let maxIndex = 0;
  values.forEach((value, index) => {
    if (value < (values[minIndex] as number)) minIndex = index;
    if (value > (values[maxIndex] as number)) maxIndex = index;
  });
  const outlier = values.map((value) => Math.abs(value - median) > limit);
  const outliers = values.flatMap((value, index) => (outlier[index] ? [{ number: index + 1, value, fromMedian: value - median }] : []));
  const min = values[minIndex] as number;
  const max = values[maxIndex] as number;
  return { values, median, min, max, minNumber: minIndex + 1, maxNumber: maxIndex + 1, delta: max - min, limit, outlier, outliers };
}

/** "3.412 V", "31.5 °C". */
export const valueText = (value: number, quantity: CellQuantity): string => `${num(value, quantity.digits)} ${quantity.unit}`;

/** A difference in its own unit: "125 mV", under 10 mV with a decimal ("2.5 mV"); "3.2 °C". */
export function diffText(diff: number, quantity: CellQuantity): string {
  const scaled = Math.abs(diff) * quantity.diffScale;
  const digits = quantity.diffScale === 1 ? quantity.digits : scaled < 10 ? 1 : 0;
  return `${num(scaled, digits)} ${quantity.diffUnit}`;
}

/** A distance from the median with its sign: "−120 mV", "+2.5 mV", "0.0 mV". */
export function signedDiffText(fromMedian: number, quantity: CellQuantity): string {
  const text = diffText(fromMedian, quantity);
  return /[1-9]/.test(text) ? `${fromMedian < 0 ? '−' : '+'}${text}` : text;
}

/** "120 mV below the median". */
export const fromMedianText = (fromMedian: number, quantity: CellQuantity): string =>
  `${diffText(fromMedian, quantity)} ${fromMedian < 0 ? 'below' : 'above'} the median`;

/** The rule in words, for the chart's legend. */
export const outlierRuleText = (quantity: CellQuantity): string =>
  `more than ${OUTLIER_Z} robust standard deviations (1.4826 × the median absolute deviation) and more than ${diffText(quantity.floor, quantity)} from the median`;
