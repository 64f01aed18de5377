/**
 * State of health against equivalent full cycles (uPlot, as TimeChart.tsx, with a numeric x axis):
 * the measured points, a dashed projection from now to where the fitted line meets the end-of-life
 * threshold, the interval of that crossing as a shaded wedge, and the threshold as a line. The canvas
 * is hidden from screen readers: the figure's summary says what it shows, and a table gives the data.
 */
import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import { mountPlot } from './plot';
import 'uplot/dist/uPlot.min.css';
import { num } from './format';
import type { Projection } from './health';

const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const SOH_COLOR = '#15803d';
const PROJECTION_COLOR = '#1d4ed8';
const THRESHOLD_COLOR = '#b91c1c';

interface Props {
  id: string;
  /** Whole cycles, ascending, and the state of health at each. */
  cycles: number[];
  soh: number[];
  projection: Projection | null;
  endOfLife: number;
  summary: string;
  height?: number;
}

interface Settings {
  projection: Projection | null;
  endOfLife: number;
  xRange: [number, number];
  yRange: [number, number];
}

/** The points, now, and the projection's end on one ascending x: uPlot's aligned data, nulls where a series has no point. */
function alignedData(cycles: number[], soh: number[], projection: Projection | null): uPlot.AlignedData {
  const rows = new Map<number, [number | null, number | null]>();
  cycles.forEach((cycle, i) => rows.set(cycle, [soh[i] ?? null, null]));
  if (projection !== null) {
    // The measured line runs on to now; the projection starts there.
    rows.set(projection.cycles, [projection.soh, projection.soh]);
    const end = rows.get(projection.end);
    rows.set(projection.end, [end?.[0] ?? null, projection.endOfLife]);
  }
  const xs = [...rows.keys()].sort((a, b) => a - b);
  return [xs, xs.map((x) => rows.get(x)![0]), xs.map((x) => rows.get(x)![1])];
}

function rangesOf(cycles: number[], soh: number[], projection: Projection | null, endOfLife: number): Pick<Settings, 'xRange' | 'yRange'> {
  const xs = [...cycles, 0];
  const ys = [...soh, endOfLife];
  if (projection !== null) {
    xs.push(projection.cycles, projection.end, projection.endLow ?? projection.end);
    // An open upper bound runs off the chart's right edge: half as far again as the estimate shows it.
    xs.push(projection.endHigh ?? projection.cycles + 1.5 * (projection.end - projection.cycles));
    ys.push(projection.soh);
  }
  const xMax = Math.max(...xs);
  const yLo = Math.min(...ys);
  const yHi = Math.max(...ys);
  const pad = Math.max((yHi - yLo) * 0.1, 1);
  return { xRange: [Math.min(...xs), xMax > 0 ? xMax * 1.03 : 1], yRange: [yLo - pad, yHi + pad] };
}

/** The end-of-life line with its label, and the projection's interval as a wedge from now to the threshold. */
function drawGuides(u: uPlot, settings: Settings): void {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const pr = uPlot.pxRatio;
  const px = (x: number) => u.valToPos(x, 'x', true);
  const py = (y: number) => u.valToPos(y, 'y', true);
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();

  const p = settings.projection;
  if (p !== null && p.endLow !== null) {
    const far = p.endHigh ?? settings.xRange[1];
    ctx.fillStyle = 'rgba(29, 78, 216, 0.12)';
    ctx.beginPath();
    ctx.moveTo(px(p.cycles), py(p.soh));
    ctx.lineTo(px(p.endLow), py(p.endOfLife));
    ctx.lineTo(px(far), py(p.endOfLife));
    ctx.closePath();
    ctx.fill();
  }

  const y = Math.round(py(settings.endOfLife)) + 0.5;
  ctx.strokeStyle = THRESHOLD_COLOR;
  ctx.lineWidth = 1.5 * pr;
  ctx.setLineDash([]); // the projection's dash may still be set
  ctx.beginPath();
  ctx.moveTo(left, y);
  ctx.lineTo(left + width, y);
  ctx.stroke();
  const text = `end of life ${num(settings.endOfLife, 0)} %`;
  ctx.font = FONT.replace('12px', `${11 * pr}px`);
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  const w = ctx.measureText(text).width;
  ctx.fillStyle = 'rgba(255, 255, 255, 0.85)';
  ctx.fillRect(left + 4 * pr, y + 2 * pr, w + 6 * pr, 13 * pr);
  ctx.fillStyle = THRESHOLD_COLOR;
  ctx.fillText(text, left + 7 * pr, y + 3 * pr);
  ctx.restore();
}

export function HealthChart({ id, cycles, soh, projection, endOfLife, summary, height = 240 }: Props) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [showTable, setShowTable] = useState(false);
  const settings = useRef<Settings>({ projection, endOfLife, ...rangesOf(cycles, soh, projection, endOfLife) });
  settings.current = { projection, endOfLife, ...rangesOf(cycles, soh, projection, endOfLife) };

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const percent = (_u: uPlot, value: number | null) => (value === null || value === undefined ? '—' : `${value.toFixed(1)} %`);
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      series: [
        { label: 'Cycles', value: (_u, value) => (value === null || value === undefined ? '—' : num(value, 1)) },
        { label: 'State of health', stroke: SOH_COLOR, width: 1.75, value: percent, spanGaps: true, points: { size: 4, fill: SOH_COLOR } },
        { label: 'Projection', stroke: PROJECTION_COLOR, width: 1.5, dash: [6, 4], value: percent, spanGaps: true, points: { show: false } },
      ],
      scales: {
        x: { time: false, range: () => settings.current.xRange },
        y: { range: () => settings.current.yRange },
      },
      axes: [
        {
          stroke: '#374151',
          grid: { stroke: '#e5e7eb', width: 1 },
          ticks: { stroke: '#d1d5db' },
          font: FONT,
          label: 'Equivalent full cycles',
          labelFont: FONT,
          labelSize: 20,
          values: (_u, splits) => splits.map((v) => num(v, 0)),
        },
        {
          stroke: '#374151',
          grid: { stroke: '#e5e7eb', width: 1 },
          ticks: { stroke: '#d1d5db' },
          font: FONT,
          size: 48,
          values: (_u, splits) => splits.map((v) => String(+v.toFixed(1))),
        },
      ],
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: true },
      hooks: { draw: [(u) => drawGuides(u, settings.current)] },
    };
    return mountPlot(options, alignedData(cycles, soh, projection), element, height, plot);
    // Data updates go through setData below; the plot is rebuilt only when its size does.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [height]);

  useEffect(() => {
    plot.current?.setData(alignedData(cycles, soh, projection));
  }, [cycles, soh, projection, endOfLife]);

  return (
    <figure className="chart health-chart" aria-labelledby={`${id}-title`} data-chart="soh">
      <figcaption id={`${id}-title`} className="chart-title">
        State of health against equivalent full cycles <span className="unit">(%)</span>
      </figcaption>
      <p className="small-print muted" data-summary="soh">
        {summary}
      </p>
      <div ref={container} className="chart-canvas" aria-hidden="true" />
      <p className="muted small-print">
        Green: measured state of health, the newest at each whole cycle. Dashed blue: projection to the end of life, shaded: its 95 % interval. Red
        line: the end-of-life threshold.
      </p>
      <details className="chart-table" onToggle={(event) => setShowTable(event.currentTarget.open)}>
        <summary>Table of the state of health by cycle</summary>
        {showTable ? (
          <div className="table-scroll" tabIndex={0} role="region" aria-label="State of health by cycle">
            <table className="data-table">
              <caption className="visually-hidden">State of health at each whole equivalent full cycle</caption>
              <thead>
                <tr>
                  <th scope="col">Cycle</th>
                  <th scope="col">State of health</th>
                </tr>
              </thead>
              <tbody>
                {cycles.map((cycle, i) => (
                  <tr key={cycle}>
                    <td>{num(cycle, 0)}</td>
                    <td>{num(soh[i], 1)} %</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </details>
    </figure>
  );
}
