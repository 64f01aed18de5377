/**
 * A pack cycled full to empty and back, ageing as it goes, with its truth known at every moment: the
 * `cycling` scenario, and what the analytics tests check the service's estimates against.
 *
 * The cycle: constant-current discharge at `cRate` down to the empty voltage (3.0 V per cell), a
 * rest, constant-current charge at `cRate` up to 4.15 V per cell, constant voltage there until the
 * current tapers below C/50, a rest. Open-circuit voltage from the state of charge (steep at both
 * ends), a series resistance, a first-order thermal model.
 *
 * Degradation: the capacity fades with the charge moved, `fadePer100Cycles` points of state of health
 * per 100 equivalent full cycles at 25 °C, faster when warmer (Arrhenius, 30 kJ/mol: about 22 %
 * faster at 30 °C). What the sensors report is not the truth: the current carries an offset and
 * noise (so coulomb counting drifts), the voltage noise.
 *
 * Time is simulated: `next()` answers readings `intervalSeconds` apart, and at each phase change one at
 * the cut-off and one a second later, with the new current (a BMS reports its cut-offs and steps of
 * current), as fast as they are asked for.
 */
import { mulberry32 } from './pack-model.js';

export interface CyclingOptions {
  seed?: number;
  nominalCapacityAh?: number;
  seriesCells?: number;
  /** State of health at the start, percent. */
  initialSoh?: number;
  /** State of health lost per 100 equivalent full cycles at 25 °C, percentage points. */
  fadePer100Cycles?: number;
  /** Charge and discharge current as a fraction of the nominal capacity per hour. */
  cRate?: number;
  ambientC?: number;
  /** Current-sensor offset, A (added to every reported current). */
  currentOffsetA?: number;
  /** Current-sensor noise, A (uniform, ±). */
  currentNoiseA?: number;
  voltageNoiseV?: number;
  /** Seconds between readings. */
  intervalSeconds?: number;
  restSeconds?: number;
  /** State of charge at the start (0..1); the pack starts discharging. */
  initialSoc?: number;
}

export interface CyclingReading {
  /** Seconds since the simulation started. */
  time: number;
  pack_voltage: number;
  pack_current: number;
  cell_temp: number;
}

export interface CyclingTruth {
  time: number;
  /** Percent. */
  soh: number;
  capacity_ah: number;
  /** Charge moved either way / (2 x nominal capacity), by the true current. */
  equivalent_cycles: number;
  /** Percent. */
  soc: number;
  /** Discharges completed. */
  cycles: number;
  /** Equivalent cycles until `endOfLifeSoh` at the fade rate of the last completed cycle. */
  remainingCycles(endOfLifeSoh: number): number;
}

type Phase = 'discharge' | 'rest_empty' | 'charge_cc' | 'charge_cv' | 'rest_full';

const STEP_SECONDS = 1;
const RESISTANCE_OHM = 0.09;
const CELL_FULL_V = 4.15;
const CELL_EMPTY_V = 3.0;
const ACTIVATION_J_PER_MOL = 30_000;
const GAS_CONSTANT = 8.314;
const REFERENCE_K = 298.15;
/** °C per second per watt of I²R, and the cooling rate towards ambient per second: about +5 °C at C/2. */
const HEATING = 2.2e-5;
const COOLING = 1 / 1800;

/** Open-circuit voltage of one cell at a state of charge 0..1: 3.0 V empty, 4.15 V full, steep near empty. */
export function cyclingCellOcv(soc: number): number {
  return 3.2 + 0.95 * soc - 0.2 * Math.exp(-soc / 0.03);
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;

export class CyclingPack {
  readonly nominalCapacityAh: number;
  readonly seriesCells: number;
  readonly fullChargeVoltage: number;
  readonly emptyVoltage: number;
  readonly #random: () => number;
  readonly #options: Required<CyclingOptions>;
  #time = 0;
  #phase: Phase = 'discharge';
  #phaseEnds = 0;
  #soc: number;
  #soh: number;
  #temp: number;
  #current = 0;
  #throughputAh = 0;
  #cycles = 0;
  #nextReading = 0;
  #measuredVoltage = 0;
  #reportNext = false;
  /** State of health and equivalent cycles when the last discharge began: the fade rate of a whole cycle. */
  #cycleStart: { soh: number; efc: number } | null = null;
  #lastRate: number;

  constructor(options: CyclingOptions = {}) {
    this.#options = {
      seed: 1,
      nominalCapacityAh: 75,
      seriesCells: 108,
      initialSoh: 100,
      fadePer100Cycles: 5,
      cRate: 0.5,
      ambientC: 25,
      currentOffsetA: 0.2,
      currentNoiseA: 0.5,
      voltageNoiseV: 0.05,
      intervalSeconds: 30,
      restSeconds: 600,
      initialSoc: 0.6,
      ...options,
    };
    const o = this.#options;
    this.#random = mulberry32(o.seed);
    this.nominalCapacityAh = o.nominalCapacityAh;
    this.seriesCells = o.seriesCells;
    this.fullChargeVoltage = o.seriesCells * CELL_FULL_V;
    this.emptyVoltage = o.seriesCells * CELL_EMPTY_V;
    this.#soc = o.initialSoc;
    this.#soh = o.initialSoh / 100;
    this.#temp = o.ambientC;
    this.#lastRate = (o.fadePer100Cycles / 100 / 100) * this.#arrhenius(o.ambientC);
  }

  /** The truth now. */
  truth(): CyclingTruth {
    const soh = this.#soh;
    const rate = this.#lastRate;
    return {
      time: this.#time,
      soh: soh * 100,
      capacity_ah: soh * this.nominalCapacityAh,
      equivalent_cycles: this.#throughputAh / (2 * this.nominalCapacityAh),
      soc: this.#soc * 100,
      cycles: this.#cycles,
      remainingCycles: (endOfLifeSoh) => Math.max(0, (soh - endOfLifeSoh / 100) / rate),
    };
  }

  /** Advances to the next reading and answers it. */
  next(): CyclingReading {
    const o = this.#options;
    for (;;) {
      const changed = this.#step();
      // At a cut-off, and the step after it, when the current has stepped: as a BMS reporting on change.
      const stepped = this.#reportNext;
      this.#reportNext = changed;
      if (changed || stepped || this.#time >= this.#nextReading) {
        this.#nextReading = this.#time + o.intervalSeconds;
        return this.#reading();
      }
    }
  }

  /** One step of STEP_SECONDS; answers true when a phase ended in it (a cut-off). */
  #step(): boolean {
    const o = this.#options;
    const dt = STEP_SECONDS;
    const nominal = this.nominalCapacityAh;
    const capacity = this.#soh * nominal;
    const ocv = this.seriesCells * cyclingCellOcv(this.#soc);
    switch (this.#phase) {
      case 'discharge':
        this.#current = -o.cRate * nominal;
        break;
      case 'charge_cc':
        this.#current = o.cRate * nominal;
        break;
      case 'charge_cv':
        this.#current = Math.max(0, (this.fullChargeVoltage - ocv) / RESISTANCE_OHM);
        break;
      default:
        this.#current = 0;
    }
    const ah = (this.#current * dt) / 3600;
    this.#soc = Math.min(1, Math.max(0, this.#soc + ah / capacity));
    this.#throughputAh += Math.abs(ah);
    const efcStep = Math.abs(ah) / (2 * nominal);
    this.#soh -= (o.fadePer100Cycles / 100 / 100) * this.#arrhenius(this.#temp) * efcStep;
    this.#temp += (this.#current ** 2 * RESISTANCE_OHM * HEATING - (this.#temp - o.ambientC) * COOLING) * dt;
    this.#time += dt;

    // The BMS cuts off on what it measures, and reports that.
    const voltage = (this.#measuredVoltage = this.#voltage() + (this.#random() - 0.5) * 2 * o.voltageNoiseV);
    switch (this.#phase) {
      case 'discharge':
        if (voltage > this.emptyVoltage) return false;
        this.#cycles++;
        this.#phase = 'rest_empty';
        this.#phaseEnds = this.#time + o.restSeconds;
        return true;
      case 'rest_empty':
        if (this.#time < this.#phaseEnds) return false;
        this.#phase = 'charge_cc';
        return true;
      case 'charge_cc':
        if (voltage < this.fullChargeVoltage) return false;
        this.#phase = 'charge_cv';
        return true;
      case 'charge_cv':
        if (this.#current >= nominal / 50) return false;
        this.#phase = 'rest_full';
        this.#phaseEnds = this.#time + o.restSeconds;
        return true;
      case 'rest_full': {
        if (this.#time < this.#phaseEnds) return false;
        const efc = this.#throughputAh / (2 * nominal);
        if (this.#cycleStart !== null && efc > this.#cycleStart.efc) this.#lastRate = (this.#cycleStart.soh - this.#soh) / (efc - this.#cycleStart.efc);
        this.#cycleStart = { soh: this.#soh, efc };
        this.#phase = 'discharge';
        return true;
      }
    }
  }

  #voltage(): number {
    return this.seriesCells * cyclingCellOcv(this.#soc) + this.#current * RESISTANCE_OHM;
  }

  #arrhenius(tempC: number): number {
    return Math.exp((ACTIVATION_J_PER_MOL / GAS_CONSTANT) * (1 / REFERENCE_K - 1 / (tempC + 273.15)));
  }

  #reading(): CyclingReading {
    const o = this.#options;
    const noise = (scale: number) => (this.#random() - 0.5) * 2 * scale;
    return {
      time: this.#time,
      pack_voltage: round(this.#measuredVoltage, 3),
      pack_current: round(this.#current + o.currentOffsetA + noise(o.currentNoiseA), 3),
      cell_temp: round(this.#temp, 2),
    };
  }
}
