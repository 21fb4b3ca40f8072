import { chartPath, type Point } from "./chart";

export default function LossChart({ points, width = 520, height = 200 }: { points: Point[]; width?: number; height?: number }) {
  const { d, xMin, xMax, yMin, yMax } = chartPath(points, width, height);
  return (
    // margin 0: a <figure>'s default 40px side margins pushed the chart out of its grid cell
    <figure className="chart" data-testid="loss-chart" data-points={points.length} style={{ margin: 0 }}>
      <svg viewBox={`0 0 ${width} ${height}`} width="100%" height={height} role="img" aria-label="loss curve">
        <rect x="0" y="0" width={width} height={height} fill="var(--panel)" stroke="var(--border)" />
        {d ? <path d={d} fill="none" stroke="var(--accent)" strokeWidth="2" /> : null}
      </svg>
      <figcaption className="muted">
        {points.length
          ? `loss ${yMin.toFixed(3)} – ${yMax.toFixed(3)} · step ${xMin} – ${xMax} · ${points.length} points`
          : "loss 曲线：训练开始记录指标后出现 / the curve appears once the trainer logs metrics"}
      </figcaption>
    </figure>
  );
}
