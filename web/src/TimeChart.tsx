/**
 * A uPlot time-series chart: a mean (or raw) line, an optional min/max band, and the monitoring
 * thresholds drawn behind the data: the normal min..max range as a shaded band with dashed
 * edges, and the critical limits as red lines. uPlot draws on canvas, which stays smooth with
 * 100,000 points; the figure's text summary is what a screen reader gets.
 */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import { mountPlot } from './plot';
import 'uplot/dist/uPlot.min.css';
import type { Limits } from './api';

export interface ChartData {
  x: number[];
  /** The raw value, or the bucket mean. */
  mean: (number | null)[];
  /** Per-bucket extremes; null for raw readings. */
  min: (number | null)[] | null;
  max: (number | null)[] | null;
}

/** An alarm open from `from` to `to` (null: still open), drawn as a shaded column behind the data. */
export interface AlarmPeriod {
  from: number;
  to: number | null;
  severity: 'warning' | 'critical';
}

const PERIOD_FILL = { warning: 'rgba(180, 83, 9, 0.13)', critical: 'rgba(185, 28, 28, 0.16)' } as const;

function drawPeriods(u: uPlot, periods: readonly AlarmPeriod[]): void {
  if (periods.length === 0) return;
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const end = u.scales.x?.max ?? 0;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  for (const period of periods) {
    const x0 = u.valToPos(period.from, 'x', true);
    const x1 = u.valToPos(period.to ?? end, 'x', true);
    ctx.fillStyle = PERIOD_FILL[period.severity];
    // At least two pixels: an alarm of a moment still shows.
    ctx.fillRect(x0, top, Math.max(x1 - x0, 2 * uPlot.pxRatio), height);
  }
  ctx.restore();
}

interface Props {
  id: string;
  title: string;
  unit: string;
  color: string;
  data: ChartData;
  /** [from, to] in Unix seconds: the chosen range, so the axis spans it even where data is missing. */
  xRange: [number, number];
  limits: Limits | undefined;
  /** Scale the y axis to include the critical limits, not just the data. */
  fitLimits: boolean;
  height?: number;
  /** A summary the chart's canvas cannot give a screen reader. */
  summary: string;
  /** Alarm periods over the range. */
  periods?: readonly AlarmPeriod[];
}

const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

function alpha(hex: string, a: number): string {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

/**
 * Draws the limits: bands and lines go under the data ('under'), their labels over it ('over'),
 * so the data never hides a label.
 */
function drawLimits(u: uPlot, limits: Limits, unit: string, layer: 'under' | 'over'): void {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const pr = uPlot.pxRatio;
  const y = (value: number) => u.valToPos(value, 'y', true);
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();

  if (layer === 'under') {
    const yMax = y(limits.max);
    const yMin = y(limits.min);
    ctx.fillStyle = 'rgba(21, 128, 61, 0.07)';
    ctx.fillRect(left, yMax, width, yMin - yMax);
  }

  const label = (text: string, color: string, py: number, below: boolean) => {
    if (layer === 'under') return;
    ctx.font = FONT.replace('12px', `${11 * pr}px`);
    ctx.textAlign = 'right';
    ctx.textBaseline = below ? 'top' : 'bottom';
    const x = left + width - 4 * pr;
    const ty = py + (below ? 3 : -3) * pr;
    const w = ctx.measureText(text).width;
    const h = 13 * pr;
    ctx.fillStyle = 'rgba(255, 255, 255, 0.85)';
    ctx.fillRect(x - w - 3 * pr, below ? ty - pr : ty - h + pr, w + 6 * pr, h);
    ctx.fillStyle = color;
    ctx.fillText(text, x, ty);
  };
  // Limits outside the view are named at the edge they lie beyond, so the chart never hides them.
  const above: string[] = [];
  const beneath: string[] = [];
  const line = (value: number, color: string, dash: number[], name: string, below: boolean) => {
    const py = Math.round(y(value)) + 0.5;
    if (py < top) {
      above.push(`${name} ${value} ${unit}`);
      return;
    }
    if (py > top + height) {
      beneath.push(`${name} ${value} ${unit}`);
      return;
    }
    if (layer === 'under') {
      ctx.strokeStyle = color;
      ctx.lineWidth = pr * (dash.length ? 1 : 1.5);
      ctx.setLineDash(dash.map((d) => d * pr));
      ctx.beginPath();
      ctx.moveTo(left, py);
      ctx.lineTo(left + width, py);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    label(`${name} ${value} ${unit}`, color, py, below);
  };
  line(limits.max, '#92400e', [5, 4], 'max', false);
  line(limits.min, '#92400e', [5, 4], 'min', true);
  line(limits.critical_high, '#b91c1c', [], 'critical', false);
  line(limits.critical_low, '#b91c1c', [], 'critical', true);
  if (above.length) label(`↑ ${above.join(', ')}`, '#4b5563', top, true);
  if (beneath.length) label(`↓ ${beneath.join(', ')}`, '#4b5563', top + height, false);
  ctx.restore();
}

/** Breaks the line where readings are missing for longer than `gap` seconds. */
function withGaps(data: ChartData, gap: number): uPlot.AlignedData {
  const x: number[] = [];
  const mean: (number | null)[] = [];
  const min: (number | null)[] = [];
  const max: (number | null)[] = [];
  for (let i = 0; i < data.x.length; i++) {
    const t = data.x[i] as number;
    if (i > 0 && t - (data.x[i - 1] as number) > gap) {
      x.push((t + (data.x[i - 1] as number)) / 2);
      mean.push(null);
      min.push(null);
      max.push(null);
    }
    x.push(t);
    mean.push(data.mean[i] ?? null);
    min.push(data.min?.[i] ?? null);
    max.push(data.max?.[i] ?? null);
  }
  return data.min && data.max ? [x, mean, min, max] : [x, mean];
}

const NO_PERIODS: readonly AlarmPeriod[] = [];

export function TimeChart({ id, title, unit, color, data, xRange, limits, fitLimits, height = 220, summary, periods = NO_PERIODS }: Props) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const settings = useRef({ xRange, limits, fitLimits, unit, periods });
  settings.current = { xRange, limits, fitLimits, unit, periods };
  const banded = data.min !== null && data.max !== null;
  // A gap is a hole of more than three typical steps (at least 30 s).
  const span = xRange[1] - xRange[0];
  const gap = Math.max(30, banded && data.x.length > 1 ? 3 * ((data.x.at(-1)! - data.x[0]!) / (data.x.length - 1)) : 30, span / 500);

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const format = (_u: uPlot, value: number | null) => (value === null || value === undefined ? '—' : `${value.toFixed(1)} ${unit}`);
    const series: uPlot.Series[] = [
      {},
      { label: banded ? 'mean' : title, stroke: color, width: 1.75, value: format, points: { size: 5, fill: color } },
    ];
    if (banded) {
      series.push(
        { label: 'min', stroke: alpha(color, 0.45), width: 1, value: format, points: { show: false } },
        { label: 'max', stroke: alpha(color, 0.45), width: 1, value: format, points: { show: false } },
      );
    }
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      series,
      bands: banded ? [{ series: [3, 2], fill: alpha(color, 0.16) }] : [],
      scales: {
        x: { time: true, range: () => settings.current.xRange },
        y: {
          range: (_u, dataMin, dataMax) => {
            const { limits: l, fitLimits: fit } = settings.current;
            let lo = dataMin ?? l?.min ?? 0;
            let hi = dataMax ?? l?.max ?? 1;
            if (dataMin === null || dataMax === null || (l && fit)) {
              lo = Math.min(lo, l?.critical_low ?? lo);
              hi = Math.max(hi, l?.critical_high ?? hi);
            }
            const pad = hi - lo > 0 ? (hi - lo) * 0.12 : Math.max(Math.abs(hi) * 0.01, 0.5);
            return [lo - pad, hi + pad];
          },
        },
      },
      axes: [
        { stroke: '#374151', grid: { stroke: '#e5e7eb', width: 1 }, ticks: { stroke: '#d1d5db' }, font: FONT },
        {
          stroke: '#374151',
          grid: { stroke: '#e5e7eb', width: 1 },
          ticks: { stroke: '#d1d5db' },
          font: FONT,
          size: 56,
          values: (_u, splits) => splits.map((v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : String(+v.toFixed(2)))),
        },
      ],
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: true },
      hooks: {
        drawClear: [
          (u) => {
            drawPeriods(u, settings.current.periods);
            const l = settings.current.limits;
            if (l) drawLimits(u, l, settings.current.unit, 'under');
          },
        ],
        draw: [
          (u) => {
            const l = settings.current.limits;
            if (l) drawLimits(u, l, settings.current.unit, 'over');
          },
        ],
      },
    };
    return mountPlot(options, withGaps(data, gap), element, height, plot);
    // Data updates go through setData below; the plot is rebuilt only when its series change.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [banded, color, height, title, unit]);

  useEffect(() => {
    plot.current?.setData(withGaps(data, gap));
  }, [data, gap, xRange, limits, fitLimits, periods]);

  return (
    <figure className="chart" aria-labelledby={`${id}-title`}>
      <figcaption id={`${id}-title`} className="chart-title">
        {title} <span className="unit">({unit})</span>
      </figcaption>
      <p className="visually-hidden">{summary}</p>
      <div ref={container} className="chart-canvas" aria-hidden="true" />
    </figure>
  );
}
