/** A small SVG line of a few hundred points: enough for a trend, no chart library needed. */
export function Sparkline({ xs, ys, label }: { xs: number[]; ys: number[]; label: string }) {
  const width = 200;
  const height = 36;
  if (xs.length < 2) return null;
  const x0 = xs[0] as number;
  const x1 = xs.at(-1) as number;
  let lo = Math.min(...ys);
  let hi = Math.max(...ys);
  if (hi - lo < 1e-9) {
    lo -= 1;
    hi += 1;
  }
  const px = (x: number) => (x1 === x0 ? width : ((x - x0) / (x1 - x0)) * width);
  const py = (y: number) => height - 3 - ((y - lo) / (hi - lo)) * (height - 6);
  const points = xs.map((x, i) => `${px(x).toFixed(1)},${py(ys[i] as number).toFixed(1)}`).join(' ');
  return (
    <svg className="sparkline" viewBox={`0 0 ${width} ${height}`} preserveAspectRatio="none" role="img" aria-label={label}>
      <polyline points={points} fill="none" stroke="currentColor" strokeWidth="1.75" strokeLinejoin="round" vectorEffect="non-scaling-stroke" />
    </svg>
  );
}
