/**
 * One bar per cell (uPlot's bars path builder, as TimeChart.tsx and HealthChart.tsx use uPlot), the
 * cell number on x. Bars rise from the bottom of the chart rather than from zero, so millivolts
 * between cells show; dashed lines mark the outlier limits around the median. An outlier's bar is
 * red with a ▼ over it along the top, so colour is not the only mark, and the figure names the
 * outliers in text. At 1,024 bars a bar is a pixel wide and has no label: hovering shows the cell
 * and its value (uPlot's live legend), and the table gives every value. The canvas is hidden from screen readers;
 * the figures, the outlier list and the table are what they read.
 */
import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import { mountPlot } from './plot';
import 'uplot/dist/uPlot.min.css';
import { diffText, fromMedianText, outlierRuleText, signedDiffText, valueText, type CellQuantity, type CellStats } from './cells';
import { num } from './format';

const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const OUTLIER_COLOR = '#b91c1c';
const LIMIT_COLOR = '#92400e';
/** The outliers named in the list; the table has the rest. */
const LISTED_OUTLIERS = 20;

interface Settings {
  stats: CellStats;
  quantity: CellQuantity;
}

function alignedData(stats: CellStats): uPlot.AlignedData {
  return [stats.values.map((_value, index) => index + 1), [...stats.values]];
}

/** The data and the outlier limits, with head room for the ▼ markers (drawMarks). */
function yRange({ stats }: Settings): [number, number] {
  const lo = Math.min(stats.min, stats.median - stats.limit);
  const hi = Math.max(stats.max, stats.median + stats.limit);
  const span = hi - lo;
  return [lo - span * 0.1, hi + span * 0.25];
}

/** The outlier limits as dashed lines over the bars, and a ▼ above each outlier's bar. */
function drawMarks(u: uPlot, { stats }: Settings): void {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const pr = uPlot.pxRatio;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.strokeStyle = LIMIT_COLOR;
  ctx.lineWidth = pr;
  ctx.setLineDash([5 * pr, 4 * pr]);
  for (const value of [stats.median - stats.limit, stats.median + stats.limit]) {
    const y = Math.round(u.valToPos(value, 'y', true)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  // Along the top, over the head room yRange leaves: a low outlier's bar ends among its neighbours,
  // and at 1,024 bars a bar is a pixel wide; up there every ▼ stands on white.
  ctx.fillStyle = OUTLIER_COLOR;
  const half = 5 * pr;
  for (const outlier of stats.outliers) {
    const x = u.valToPos(outlier.number, 'x', true);
    ctx.beginPath();
    ctx.moveTo(x - half, top + 2 * pr);
    ctx.lineTo(x + half, top + 2 * pr);
    ctx.lineTo(x, top + 2 * pr + 2 * half);
    ctx.closePath();
    ctx.fill();
  }
  ctx.restore();
}

function Figures({ stats, quantity }: Settings) {
  const item = quantity.item.toLowerCase();
  const rows: [string, string, string][] = [
    ['min', 'Lowest', `${valueText(stats.min, quantity)} (${item} ${stats.minNumber})`],
    ['max', 'Highest', `${valueText(stats.max, quantity)} (${item} ${stats.maxNumber})`],
    ['delta', 'Delta', diffText(stats.delta, quantity)],
    ['median', 'Median', valueText(stats.median, quantity)],
  ];
  return (
    <dl className="specs cell-figures">
      {rows.map(([name, term, value]) => (
        <div key={name}>
          <dt>{term}</dt>
          <dd data-stat={name}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function OutlierList({ stats, quantity, id }: Settings & { id: string }) {
  const { outliers } = stats;
  if (outliers.length === 0) {
    return (
      <p className="small-print" data-outliers="0">
        No outliers.
      </p>
    );
  }
  const more = outliers.length - LISTED_OUTLIERS;
  return (
    <>
      <p className="small-print" id={`${id}-outliers`} data-outliers={outliers.length}>
        <span aria-hidden="true" className="outlier-mark">
          ▼
        </span>{' '}
        {outliers.length === 1 ? '1 outlier' : `${outliers.length} outliers`}:
      </p>
      <ul className="cell-outliers" aria-labelledby={`${id}-outliers`}>
        {outliers.slice(0, LISTED_OUTLIERS).map((outlier) => (
          <li key={outlier.number} data-outlier={outlier.number}>
            {quantity.item} {outlier.number}: {valueText(outlier.value, quantity)}, {fromMedianText(outlier.fromMedian, quantity)}
          </li>
        ))}
        {more > 0 ? <li>and {more} more (in the table)</li> : null}
      </ul>
    </>
  );
}

export function CellChart({ id, stats, quantity, height = 220 }: Settings & { id: string; height?: number }) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [showTable, setShowTable] = useState(false);
  const settings = useRef<Settings>({ stats, quantity });
  settings.current = { stats, quantity };
  const { item, unit, digits } = quantity;

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const bars = uPlot.paths.bars!({
      size: [0.7, 24, 1],
      disp: {
        // uPlot.Series.BarsPathBuilderFacetUnit.Color, a const enum that isolated modules cannot read.
        fill: { unit: 3, values: () => settings.current.stats.outlier.map((outlier) => (outlier ? OUTLIER_COLOR : quantity.color)) },
      },
    });
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      series: [
        { label: item, value: (_u, value) => (value === null || value === undefined ? '—' : String(value)) },
        {
          label: quantity.title,
          width: 0,
          fill: quantity.color,
          paths: bars,
          points: { show: false },
          // Bars rise from the bottom of the chart: from zero, 3.300 V and 3.280 V would look the same.
          fillTo: (u) => u.scales.y?.min ?? 0,
          value: (_u, value, _series, index) => {
            if (value === null || value === undefined || index === null) return '—';
            const { stats: s, quantity: q } = settings.current;
            return `${valueText(value, q)} (${signedDiffText(value - s.median, q)})${s.outlier[index] ? ', outlier' : ''}`;
          },
        },
      ],
      scales: {
        x: { time: false, range: () => [0.5, settings.current.stats.values.length + 0.5] },
        y: { range: () => yRange(settings.current) },
      },
      axes: [
        {
          stroke: '#374151',
          grid: { show: false },
          ticks: { stroke: '#d1d5db' },
          font: FONT,
          label: item,
          labelFont: FONT,
          labelSize: 20,
          space: 36,
          // Whole cell numbers only.
          incrs: [1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 256, 500],
          values: (_u, splits) => splits.map((v) => String(v)),
        },
        {
          stroke: '#374151',
          grid: { stroke: '#e5e7eb', width: 1 },
          ticks: { stroke: '#d1d5db' },
          font: FONT,
          size: 56,
          values: (_u, splits) => splits.map((v) => num(v, digits)),
        },
      ],
      cursor: { drag: { x: false, y: false }, y: false, points: { show: false } },
      legend: { live: true },
      hooks: { draw: [(u) => drawMarks(u, settings.current)] },
    };
    return mountPlot(options, alignedData(settings.current.stats), element, height, plot);
    // Data updates go through setData below; the plot is rebuilt only when what it shows does.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [height, quantity]);

  useEffect(() => {
    const instance = plot.current;
    if (!instance) return;
    instance.setData(alignedData(stats));
    // What the chart holds, for tests and anyone inspecting the page: the canvas cannot say it.
    container.current!.dataset.bars = String(instance.data[0].length);
  }, [stats]);

  const count = stats.values.length;
  return (
    <figure className="chart cell-chart" aria-labelledby={`${id}-title`} data-cell-chart={quantity.key}>
      <figcaption id={`${id}-title`} className="chart-title">
        {quantity.title} <span className="unit">({unit})</span>
      </figcaption>
      <p className="small-print muted" data-summary={quantity.key}>
        {num(count, 0)} {count === 1 ? item.toLowerCase() : `${item.toLowerCase()}s`}, one bar each.
      </p>
      <Figures stats={stats} quantity={quantity} />
      <OutlierList stats={stats} quantity={quantity} id={id} />
      <div ref={container} className="chart-canvas" aria-hidden="true" />
      <p className="muted small-print">
        Outlier: {outlierRuleText(quantity)}, here outside {valueText(stats.median - stats.limit, quantity)} to{' '}
        {valueText(stats.median + stats.limit, quantity)} (the dashed lines). Outliers are red bars with a ▼ over them along the top. Hover a bar for its value.
      </p>
      <details className="chart-table" onToggle={(event) => setShowTable(event.currentTarget.open)}>
        <summary>Table of the {quantity.title.toLowerCase()}</summary>
        {showTable ? (
          <div className="table-scroll" tabIndex={0} role="region" aria-label={quantity.title}>
            <table className="data-table">
              <caption className="visually-hidden">
                {quantity.title} of the latest reading, by {item.toLowerCase()} number
              </caption>
              <thead>
                <tr>
                  <th scope="col">{item}</th>
                  <th scope="col">{quantity.key === 'voltage' ? 'Voltage' : 'Temperature'}</th>
                  <th scope="col">From the median</th>
                  <th scope="col">Outlier</th>
                </tr>
              </thead>
              <tbody>
                {stats.values.map((value, index) => (
                  <tr key={index} data-outlier={stats.outlier[index] ? '' : undefined}>
                    <td>{index + 1}</td>
                    <td>{valueText(value, quantity)}</td>
                    <td>{signedDiffText(value - stats.median, quantity)}</td>
                    <td>{stats.outlier[index] ? '▼ outlier' : ''}</td>
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
