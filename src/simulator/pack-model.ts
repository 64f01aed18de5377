/**
 * A battery pack good enough for a demo: a 108s2p NMC pack of 75 Ah (the shipped specs file),
 * open-circuit voltage from the state of charge, an internal resistance that makes the voltage sag
 * under load, and a first-order thermal model. Scenarios set the current profile (and, for the
 * anomaly, the faults). Deterministic for a seed, so tests can check what it produces.
 */

export const SCENARIOS = ['normal', 'charging', 'discharging', 'overheating', 'voltage_anomaly'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface Reading {
  /** Seconds since the pack (the simulator) started: the device clock a frame carries. */
  device_time: number;
  pack_voltage: number;
  pack_current: number;
  cell_temp: number;
}

export interface Performance {
  pack_voltage: number;
  pack_current: number;
  cell_temp: number;
  capacity_remaining: number;
  cycle_count: number;
  age_months: number;
  health_score: number;
}

export interface Prediction {
  remaining_life_hours: number;
  remaining_cycles: number;
  degradation_rate: number;
}

const SERIES_CELLS = 108;
const CAPACITY_AH = 75;
const RESISTANCE_OHM = 0.09;
const AMBIENT_C = 24;
const MAX_CYCLES = 3000;

/** Open-circuit voltage of one NMC cell at a state of charge 0..1: steep at both ends. */
function cellOcv(soc: number): number {
  const s = Math.min(1, Math.max(0, soc));
  return 3.3 + 0.8 * s + 0.12 * Math.max(0, s - 0.9) * 10 - 0.3 * Math.max(0, 0.1 - s) * 10;
}

/** A small deterministic random generator, so a simulation (or a failing test) can be repeated. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;

export class PackModel {
  readonly scenario: Scenario;
  readonly #random: () => number;
  #time = 0;
  #soc: number;
  #temp: number;
  #current = 0;
  #cycles: number;
  readonly #ageMonths: number;
  #health: number;
  /** Charge moved since the last whole cycle, in Ah. */
  #throughput = 0;
  #anomalyLeft = 0;
  #anomalyOffset = 0;

  constructor(scenario: Scenario, seed = 1) {
    this.scenario = scenario;
    this.#random = mulberry32(seed);
    const r = this.#random;
    this.#soc = scenario === 'charging' ? 0.2 + 0.1 * r() : scenario === 'discharging' || scenario === 'overheating' ? 0.85 + 0.1 * r() : 0.5 + 0.3 * r();
    this.#temp = AMBIENT_C + 4 * r();
    this.#cycles = 200 + Math.floor(600 * r());
    this.#ageMonths = 6 + Math.floor(30 * r());
    this.#health = 97 - this.#cycles / 150 - 3 * r();
  }

  /** Advances the pack by `dt` seconds and answers the reading at the new time. */
  next(dt: number): Reading {
    const r = this.#random;
    this.#time += dt;
    const noise = (scale: number) => (r() - 0.5) * 2 * scale;
    let target: number;
    switch (this.scenario) {
      case 'charging':
        // Constant current, tapering above 80 % (the constant-voltage phase).
        target = this.#soc < 0.8 ? 70 : 70 * Math.max(0.05, (1 - this.#soc) / 0.2);
        break;
      case 'discharging':
        target = -110 + 30 * Math.sin(this.#time / 40);
        break;
      case 'overheating':
        // Hard use with failing cooling: heat builds faster than it leaves.
        target = -190 + 20 * Math.sin(this.#time / 25);
        break;
      default:
        // Driving: mostly moderate draw, some regenerative braking.
        target = -25 + 35 * Math.sin(this.#time / 30) + 10 * Math.sin(this.#time / 7);
    }
    this.#current += (target - this.#current) * Math.min(1, dt / 3) + noise(2);
    if (this.#soc >= 0.999 && this.#current > 0) this.#current = noise(0.5);
    if (this.#soc <= 0.05 && this.#current < 0) this.#current = noise(0.5);

    const ah = (this.#current * dt) / 3600;
    this.#soc = Math.min(1, Math.max(0, this.#soc + ah / CAPACITY_AH));
    this.#throughput += Math.abs(ah) / 2;
    if (this.#throughput >= CAPACITY_AH) {
      this.#throughput -= CAPACITY_AH;
      this.#cycles++;
      this.#health -= 0.007;
    }

    // °C per second from I²R; with working cooling a pack at 110 A settles near 38 °C, with failed
    // cooling (overheating) it climbs about 0.1 °C/s past the 45 °C warning and the 60 °C limit.
    const overheating = this.scenario === 'overheating';
    const heating = this.#current ** 2 * RESISTANCE_OHM * (overheating ? 0.00004 : 0.00039);
    const cooling = (this.#temp - AMBIENT_C) * (overheating ? 0.002 : 0.03);
    this.#temp += (heating - cooling) * dt + noise(0.05);

    let voltage = SERIES_CELLS * cellOcv(this.#soc) + this.#current * RESISTANCE_OHM + noise(0.3);
    if (this.scenario === 'voltage_anomaly') {
      // Now and then a sensor or contactor fault: a spike or dip well past the thresholds.
      if (this.#anomalyLeft <= 0 && r() < 0.04 * dt) {
        this.#anomalyLeft = 2 + 6 * r();
        this.#anomalyOffset = r() < 0.5 ? 40 + 30 * r() : -(70 + 50 * r());
      }
      if (this.#anomalyLeft > 0) {
        this.#anomalyLeft -= dt;
        voltage += this.#anomalyOffset;
      }
    }
    return {
      device_time: round(this.#time, 3),
      pack_voltage: round(voltage, 2),
      pack_current: round(this.#current, 2),
      cell_temp: round(this.#temp, 2),
    };
  }

  /** What the AI predictor would say about the pack now. */
  performance(last: Reading): Performance {
    return {
      pack_voltage: last.pack_voltage,
      pack_current: last.pack_current,
      cell_temp: last.cell_temp,
      capacity_remaining: round(this.#soc * this.#health, 2),
      cycle_count: this.#cycles,
      age_months: this.#ageMonths,
      health_score: round(this.#health - Math.max(0, this.#temp - 45) * 0.5, 2),
    };
  }

  prediction(): Prediction {
    const stress = this.scenario === 'overheating' ? 2.5 : this.scenario === 'voltage_anomaly' ? 1.4 : 1;
    const degradation = round((0.015 + (100 - this.#health) * 0.0004) * stress, 4);
    const remainingCycles = Math.max(0, Math.round(((this.#health - 70) / (degradation * 100)) * 100 * (MAX_CYCLES / 3000)));
    return {
      remaining_life_hours: round(remainingCycles * 2.5, 1),
      remaining_cycles: remainingCycles,
      degradation_rate: degradation,
    };
  }
}
