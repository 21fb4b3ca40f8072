/** Small shared pieces of the teaching tabs: a source reference, a preset picker, an SVG line chart, a heat map. */
import type React from "react";
import { useEffect, useRef, useState } from "react";
import { facts } from "./facts";

/** A reference into the repository by file and symbol (never a line number, which goes stale). */
export function Src({ path, symbol }: { path: string; symbol?: string }) {
  return (
    <code className="src-ref" title="source reference / 源码位置">
      {path}
      {symbol ? `::${symbol}` : ""}
    </code>
  );
}

export function PresetPicker({ value, onChange }: { value: string; onChange: (key: string) => void }) {
  return (
    <label className="row">
      预设 / preset:
      <select value={value} onChange={(e) => onChange(e.target.value)} aria-label="preset">
        {facts.presets.map((p) => (
          <option key={p.key} value={p.key}>
            {p.title} ({p.config.hidden_size as number}/{p.config.num_hidden_layers as number}
            {p.config.use_moe ? ", MoE" : ""})
          </option>
        ))}
      </select>
    </label>
  );
}

export type Series = { name: string; color: string; points: [number, number][] };

/** Rendered width of a box in CSS pixels (ResizeObserver; `fallback` where there is none, as in jsdom). */
function useBoxWidth(fallback: number): [React.RefObject<HTMLDivElement | null>, number] {
  const ref = useRef<HTMLDivElement | null>(null);
  const [width, setWidth] = useState(fallback);
  useEffect(() => {
    const el = ref.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(([entry]) => setWidth(Math.max(240, Math.round(entry.contentRect.width))));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

/**
 * Line chart with optional log-scale y axis; pure SVG, no chart library. The viewBox is as wide as the chart is
 * drawn, so its 11 px labels stay 11 px on a phone (a fixed 560-unit viewBox shrank them to 6 px at 390 px);
 * the legend is HTML under the plot, where it cannot cover a line.
 */
export function LineChart({ series, logY = false, xLabel, yLabel, height = 220 }: {
  series: Series[]; logY?: boolean; xLabel: string; yLabel: string; height?: number;
}) {
  const [box, width] = useBoxWidth(560);
  const pad = 44;
  const all = series.flatMap((s) => s.points);
  const fy = (v: number) => (logY ? Math.log10(v) : v);
  const xs = all.map((p) => p[0]), ys = all.map((p) => fy(p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - 2 * pad);
  const sy = (y: number) => height - pad + 10 - ((fy(y) - y0) / (y1 - y0 || 1)) * (height - pad - 20);
  const fmt = (v: number) => (logY ? `1e${v.toFixed(0)}` : Math.abs(v) < 0.01 ? v.toExponential(1) : v.toFixed(2));
  return (
    <div className="chart" ref={box}>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${yLabel} vs ${xLabel}`}>
        <line x1={pad} y1={height - pad + 10} x2={width - pad} y2={height - pad + 10} stroke="currentColor" opacity={0.4} />
        <line x1={pad} y1={10} x2={pad} y2={height - pad + 10} stroke="currentColor" opacity={0.4} />
        <text x={pad} y={height - 8} fontSize={11} fill="currentColor">{`${x0}`}</text>
        <text x={width - pad} y={height - 8} fontSize={11} fill="currentColor" textAnchor="end">{`${x1} ${xLabel}`}</text>
        <text x={2} y={16} fontSize={11} fill="currentColor">{fmt(y1)}</text>
        <text x={2} y={height - pad + 10} fontSize={11} fill="currentColor">{fmt(y0)}</text>
        <text x={width / 2} y={14} fontSize={11} fill="currentColor" textAnchor="middle">{yLabel}</text>
        {series.map((s) => (
          <polyline key={s.name} fill="none" stroke={s.color} strokeWidth={2}
            points={s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")} />
        ))}
      </svg>
      <div className="legend">
        {series.map((s) => (
          <span key={s.name}><i style={{ background: s.color }} />{s.name}</span>
        ))}
      </div>
    </div>
  );
}

/** Matrix of values in [0, 1] as coloured cells, row and column labels as text. */
export function HeatMap({ values, rowLabels, colLabels }: { values: number[][]; rowLabels: string[]; colLabels: string[] }) {
  return (
    <div className="heatmap" style={{ gridTemplateColumns: `auto repeat(${colLabels.length}, minmax(18px, 1fr))` }}>
      <span />
      {colLabels.map((c, j) => <span key={`c${j}`} className="hm-label">{c}</span>)}
      {values.map((row, i) => (
        <Row key={i} label={rowLabels[i]} row={row} />
      ))}
    </div>
  );
}

function Row({ label, row }: { label: string; row: number[] }): React.ReactElement {
  return (
    <>
      <span className="hm-label">{label}</span>
      {row.map((v, j) => (
        <span key={j} className="hm-cell" title={v.toFixed(4)}
          style={{ background: `color-mix(in srgb, var(--accent) ${Math.round(v * 100)}%, transparent)` }} />
      ))}
    </>
  );
}

/** Show a token's text visibly: newline and tab as escapes, a lone byte piece as U+FFFD. */
export function visible(text: string): string {
  return text.replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r").replace(/ /g, "␣");
}

export function Command({ text, note }: { text: string; note?: string }) {
  return (
    <div className="cmd">
      <pre>{text}</pre>
      {note ? <span className="muted">{note}</span> : null}
    </div>
  );
}
