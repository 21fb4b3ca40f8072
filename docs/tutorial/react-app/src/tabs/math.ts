/**
 * The two formulas the tabs let you play with, written from model/model_minimind.py::rope_inv_freq and
 * trainer/trainer_utils.py::lr_at. math.test.ts checks them against the values those Python functions exported.
 */

export type Yarn = { factor: number; original_max_position_embeddings: number; beta_fast: number; beta_slow: number };

/** Inverse frequency of each rotary pair; YaRN keeps fast dims, divides slow ones by `factor`, ramps in between. */
export function ropeInvFreq(headDim: number, theta: number, yarn?: Yarn | null): number[] {
  const half = headDim / 2;
  const inv = Array.from({ length: half }, (_, i) => 1 / Math.pow(theta, (2 * i) / headDim));
  if (!yarn) return inv;
  const { low, high } = yarnRange(headDim, theta, yarn);
  return inv.map((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / Math.max(high - low, 1e-3)));
    return f * (1 - ramp) + (f / yarn.factor) * ramp;
  });
}

/** The pair indices where YaRN's ramp starts and ends (dims completing beta_fast / beta_slow turns). */
export function yarnRange(headDim: number, theta: number, yarn: Yarn): { low: number; high: number } {
  const turnsToDim = (turns: number) =>
    (headDim * Math.log(yarn.original_max_position_embeddings / (turns * 2 * Math.PI))) / (2 * Math.log(theta));
  return {
    low: Math.max(Math.floor(turnsToDim(yarn.beta_fast)), 0),
    high: Math.min(Math.ceil(turnsToDim(yarn.beta_slow)), headDim / 2 - 1),
  };
}

/** Wavelength in tokens of each pair: 2*pi / inv_freq. */
export function wavelengths(invFreq: number[]): number[] {
  return invFreq.map((f) => (2 * Math.PI) / f);
}

/** Linear warmup, then cosine from peak to 10% of peak. */
export function lrAt(step: number, total: number, peak: number, warmup = 0): number {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  return peak * (0.1 + 0.45 * (1 + Math.cos(Math.PI * Math.min(progress, 1))));
}

/** Bytes of the KV cache for `tokens` tokens: K and V, per layer, per KV head, fp16 by default. */
export function kvCacheBytes(layers: number, kvHeads: number, headDim: number, tokens: number, bytesPer = 2): number {
  return 2 * layers * kvHeads * headDim * tokens * bytesPer;
}
