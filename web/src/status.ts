/**
 * Pack status from the monitoring thresholds: critical beyond critical_low/critical_high (or
 * health under health.critical), warning outside min..max (or health under health.warning),
 * else normal. Pure functions, so the rules read in one place.
 */
import type { DataRecord, Limits, PerformanceRecord, Thresholds } from './api';

export type Level = 'normal' | 'warning' | 'critical';
export type Metric = 'voltage' | 'current' | 'temperature' | 'health';

export interface Finding {
  metric: Metric;
  level: Exclude<Level, 'normal'>;
  /** e.g. "Temperature 62.0 °C is above the critical limit 60 °C". */
  text: string;
}

export interface PackStatus {
  level: Level;
  findings: Finding[];
}

const RANK: Record<Level, number> = { normal: 0, warning: 1, critical: 2 };

export const worst = (a: Level, b: Level): Level => (RANK[a] >= RANK[b] ? a : b);

export const METRIC_INFO = {
  voltage: { label: 'Voltage', unit: 'V', digits: 1 },
  current: { label: 'Current', unit: 'A', digits: 1 },
  temperature: { label: 'Temperature', unit: '°C', digits: 1 },
  health: { label: 'Health', unit: '%', digits: 1 },
} as const;

function fmt(metric: Metric, value: number): string {
  const { unit, digits } = METRIC_INFO[metric];
  return `${value.toFixed(digits)} ${unit}`;
}

/** Level of one value against a min/max/critical set of limits. */
export function levelOf(value: number, limits: Limits): Level {
  if (value < limits.critical_low || value > limits.critical_high) return 'critical';
  if (value < limits.min || value > limits.max) return 'warning';
  return 'normal';
}

function rangeFinding(metric: Exclude<Metric, 'health'>, value: number, limits: Limits): Finding | null {
  const label = METRIC_INFO[metric].label;
  const shown = fmt(metric, value);
  if (value > limits.critical_high) {
    return { metric, level: 'critical', text: `${label} ${shown} is above the critical limit ${fmt(metric, limits.critical_high)}` };
  }
  if (value < limits.critical_low) {
    return { metric, level: 'critical', text: `${label} ${shown} is below the critical limit ${fmt(metric, limits.critical_low)}` };
  }
  if (value > limits.max) return { metric, level: 'warning', text: `${label} ${shown} is above ${fmt(metric, limits.max)}` };
  if (value < limits.min) return { metric, level: 'warning', text: `${label} ${shown} is below ${fmt(metric, limits.min)}` };
  return null;
}

export function healthLevel(health: number, thresholds: Thresholds['health']): Level {
  if (health < thresholds.critical) return 'critical';
  if (health < thresholds.warning) return 'warning';
  return 'normal';
}

export function packStatus(
  data: Pick<DataRecord, 'pack_voltage' | 'pack_current' | 'cell_temp'> | null,
  performance: Pick<PerformanceRecord, 'health_score'> | null,
  thresholds: Thresholds,
): PackStatus {
  const findings: Finding[] = [];
  if (data) {
    for (const finding of [
      rangeFinding('voltage', data.pack_voltage, thresholds.voltage),
      rangeFinding('current', data.pack_current, thresholds.current),
      rangeFinding('temperature', data.cell_temp, thresholds.temperature),
    ]) {
      if (finding) findings.push(finding);
    }
  }
  if (performance) {
    const level = healthLevel(performance.health_score, thresholds.health);
    if (level !== 'normal') {
      const limit = level === 'critical' ? thresholds.health.critical : thresholds.health.warning;
      findings.push({
        metric: 'health',
        level,
        text: `Health ${fmt('health', performance.health_score)} is below ${level === 'critical' ? 'the critical limit ' : ''}${fmt('health', limit)}`,
      });
    }
  }
  findings.sort((a, b) => RANK[b.level] - RANK[a.level]);
  const level = findings.reduce<Level>((acc, finding) => worst(acc, finding.level), 'normal');
  return { level, findings };
}

/** Seconds without any reading after which a pack counts as stale. */
export const STALE_AFTER_SECONDS = 60;

export const isStale = (lastSeen: number | undefined, now: number): boolean =>
  lastSeen === undefined || now - lastSeen > STALE_AFTER_SECONDS;
