import { describe, expect, it } from "vitest";
import { facts } from "./facts";
import { kvCacheBytes, lrAt, ropeInvFreq } from "./math";

const close = (a: number, b: number, rel = 1e-6) => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-30);

describe("formulas = the Python code's exported values", () => {
  it.each(facts.rope.per_head_dim.map((r) => [r.head_dim, r] as const))("RoPE / YaRN head_dim %i", (d, r) => {
    const plain = ropeInvFreq(d, facts.rope.theta);
    const yarn = ropeInvFreq(d, facts.rope.theta, facts.rope.yarn);
    plain.forEach((v, i) => expect(close(v, r.inv_freq[i])).toBe(true));
    yarn.forEach((v, i) => expect(close(v, r.inv_freq_yarn[i])).toBe(true));
  });

  it("cos tables at the exported positions", () => {
    const inv = ropeInvFreq(facts.rope.table_head_dim, facts.rope.theta, facts.rope.yarn);
    for (const row of facts.rope.table) {
      inv.forEach((f, i) => expect(Math.abs(Math.cos(row.position * f) - row.cos_yarn[i])).toBeLessThan(2e-3));
    }
  });

  it.each(facts.lr.map((c) => [c.peak, c.warmup, c] as const))("lr_at peak %s warmup %i", (_p, _w, c) => {
    for (const [step, lr] of c.points) expect(close(lrAt(step, c.total, c.peak, c.warmup), lr, 1e-8)).toBe(true);
  });

  it("KV cache bytes per token = the StaticKVCache the model allocates", () => {
    for (const p of facts.presets) {
      const c = p.config as Record<string, number>;
      expect(kvCacheBytes(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, 1)).toBe(
        p.kv_cache_bytes_per_token_fp16);
    }
  });
});
