/**
 * Per-cell readings for a simulated pack: the voltage of each of `count` cells in series and the
 * temperature of each module's sensor, consistent with the pack reading they go with.
 *
 * - Voltages: the pack voltage shared evenly, plus each cell's own offset (manufacturing spread,
 *   fixed for the cell, within ±SPREAD_V), plus noise (±NOISE_V), rounded to the millivolt as BMS
 *   front ends report them. With `outlierMv`, one cell (chosen by the seed) sits that many millivolts
 *   below the others at rest and sags twice as much under a 100 A discharge: a weak cell, as a
 *   cell-imbalance alarm should find it. Without an outlier the spread (max minus min) stays within
 *   2 × (SPREAD_V + NOISE_V) = 10 mV, and a millivolt of rounding.
 * - Temperatures: one sensor per module of up to CELLS_PER_MODULE cells, as packs are usually
 *   instrumented; the middle modules run warmer (up to MIDDLE_WARMTH_C above the pack's reading, which
 *   stands for the coolest), plus noise, rounded to 0.1 °C.
 *
 * Deterministic for a seed, like the pack model.
 */
import { mulberry32, type Reading } from './pack-model.js';

export const SPREAD_V = 0.004;
export const NOISE_V = 0.001;
export const CELLS_PER_MODULE = 12;
export const MIDDLE_WARMTH_C = 2;

export interface CellModelOptions {
  /** Cells in series, 1 to 1,024. */
  count: number;
  /** Millivolts one weak cell sits below the others at rest; 0 or unset: no outlier. */
  outlierMv?: number;
  seed?: number;
}

export interface CellReadings {
  cell_voltages: number[];
  cell_temps: number[];
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;

export class CellModel {
  readonly count: number;
  /** The weak cell's index, or -1. */
  readonly outlier: number;
  readonly #outlierV: number;
  readonly #offsets: number[];
  readonly #modules: number;
  readonly #random: () => number;

  constructor(options: CellModelOptions) {
    if (!Number.isInteger(options.count) || options.count < 1 || options.count > 1024) {
      throw new RangeError(`cells must be a whole number from 1 to 1024, got ${options.count}`);
    }
    this.count = options.count;
    this.#random = mulberry32((options.seed ?? 1) ^ 0x5eed);
    const r = this.#random;
    this.#offsets = Array.from({ length: this.count }, () => (r() - 0.5) * 2 * SPREAD_V);
    this.#outlierV = (options.outlierMv ?? 0) / 1000;
    this.outlier = this.#outlierV > 0 ? Math.floor(r() * this.count) : -1;
    this.#modules = Math.ceil(this.count / CELLS_PER_MODULE);
  }

  /** The cells' readings that go with a pack reading. */
  readings(pack: Reading): CellReadings {
    const r = this.#random;
    const share = pack.pack_voltage / this.count;
    // Discharge current in hundreds of amperes: the weak cell's extra sag grows with it.
    const load = Math.max(0, -pack.pack_current) / 100;
    const cell_voltages = this.#offsets.map((offset, i) => {
      const weak = i === this.outlier ? this.#outlierV * (1 + load) : 0;
      return round(share + offset - weak + (r() - 0.5) * 2 * NOISE_V, 3);
    });
    const middle = (this.#modules - 1) / 2;
    const cell_temps = Array.from({ length: this.#modules }, (_, m) => {
      const warmth = middle === 0 ? 0 : MIDDLE_WARMTH_C * (1 - Math.abs(m - middle) / middle);
      return round(pack.cell_temp + warmth + (r() - 0.5) * 0.2, 1);
    });
    return { cell_voltages, cell_temps };
  }
}
