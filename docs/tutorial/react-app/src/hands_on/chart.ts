/** Loss-curve geometry: points -> an SVG path in a w x h box (pure, so it is unit-tested). */
export type Point = { step: number; loss: number };

export function chartPath(points: Point[], w: number, h: number, pad = 4): {
  d: string; xMin: number; xMax: number; yMin: number; yMax: number;
} {
  const ok = points.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss));
  if (!ok.length) return { d: "", xMin: 0, xMax: 0, yMin: 0, yMax: 0 };
  const xs = ok.map((p) => p.step), ys = ok.map((p) => p.loss);
  const xMin = Math.min(...xs), xMax = Math.max(...xs), yMin = Math.min(...ys), yMax = Math.max(...ys);
  const sx = (x: number) => pad + (xMax === xMin ? (w - 2 * pad) / 2 : ((x - xMin) / (xMax - xMin)) * (w - 2 * pad));
  const sy = (y: number) => pad + (yMax === yMin ? (h - 2 * pad) / 2 : (1 - (y - yMin) / (yMax - yMin)) * (h - 2 * pad));
  const d = ok.map((p, i) => `${i ? "L" : "M"}${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`).join(" ");
  return { d, xMin, xMax, yMin, yMax };
}
