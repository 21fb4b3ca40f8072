import { useState } from "react";
import { bytes, facts } from "./facts";
import { kvCacheBytes } from "./math";
import { HeatMap, Src, visible } from "./common";
import { shape as shapeText } from "./facts";

/** 注意力: real attention probabilities of the tiny model's heads, GQA head sharing, and the KV cache. */
export function AttentionTab() {
  const t = facts.tiny;
  const a = t.attention;
  const small = facts.presets[0]; // MiniMind2-Small: the heads of the real model, next to the demo model's
  const [head, setHead] = useState(0);
  const [tokens, setTokens] = useState(2048);
  const labels = t.tokens.map(visible);
  return (
    <section>
      <h2>注意力、GQA 与 KV cache / Attention</h2>
      <p data-testid="attention-intro">
        <Src path="model/model_minimind.py" symbol="Attention" />：几个查询头共享一个 KV 头（GQA，
        <Src path="model/model_minimind.py" symbol="repeat_kv" />），因果掩码，softmax(QKᵀ/√head_dim)。
        {small.title} 有 {small.config.num_attention_heads} 个查询头、{small.config.num_key_value_heads} 个 KV 头
        （head_dim {small.config.head_dim}）。
        下图用的是导出脚本训练的演示小模型（hidden {t.config.hidden_size}、{t.config.num_hidden_layers} 层），
        只有 {a.n_heads} 个查询头、{a.n_kv_heads} 个 KV 头（head_dim {a.head_dim}），便于看清共享关系：
        第 {a.layer} 层对句子「{t.sentence}」的真实注意力概率，由导出脚本用模型自己的 q/k 投影与{" "}
        <Src path="model/model_minimind.py" symbol="apply_rope" /> 计算，并与模块输出核对（最大差 {a.max_abs_diff_vs_module}）。
      </p>
      <div className="row">
        {a.probs.map((_, h) => (
          <button key={h} className={h === head ? "btn primary" : "btn"} onClick={() => setHead(h)}>
            Q 头 {h} → KV 头 {a.kv_head_of_query_head[h]}
          </button>
        ))}
      </div>
      <div className="card">
        <HeatMap values={a.probs[head]} rowLabels={labels} colLabels={labels} />
        <p className="muted">行 = 查询位置，列 = 被看的位置；上三角为 0（看不到未来）。</p>
      </div>
      <div className="grid2">
        <div className="card">
          <h3>KV cache 逐步增长（<Src path="model/model_minimind.py" symbol="StaticKVCache" />）</h3>
          <table className="tbl mono">
            <thead><tr><th>步</th><th>输入 token</th><th>cache 长度</th><th>第 0 层 K 形状</th><th>下一个 id</th></tr></thead>
            <tbody>
              {t.kv_cache.map((s) => (
                <tr key={s.step}><td>{s.step === 0 ? "prefill" : s.step}</td><td>{s.input_tokens}</td><td>{s.cache_length}</td>
                  <td>{shapeText(s.layer0_keys_shape)}</td><td>{s.next_id}</td></tr>
              ))}
            </tbody>
          </table>
          <p className="muted">预填充一次写入整段提示，之后每步只算 1 个新 token，并把它的 K/V 写进预分配的缓存。</p>
        </div>
        <div className="card">
          <h3>GQA 省多少显存</h3>
          <label>上下文长度 <input type="number" min={1} max={32768} value={tokens}
            onChange={(e) => setTokens(Math.max(1, Number(e.target.value) || 1))} aria-label="context tokens" /></label>
          <table className="tbl">
            <thead><tr><th>预设</th><th>GQA（实际）</th><th>若每个头都有 KV</th></tr></thead>
            <tbody>
              {facts.presets.map((p) => {
                const c = p.config as Record<string, number>;
                return (
                  <tr key={p.key}><td>{p.title}</td>
                    <td>{bytes(kvCacheBytes(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, tokens))}</td>
                    <td>{bytes(kvCacheBytes(c.num_hidden_layers, c.num_attention_heads, c.head_dim, tokens))}</td></tr>
                );
              })}
            </tbody>
          </table>
          <p className="muted">batch 1、fp16；每 token 字节数与模型实际分配的 StaticKVCache 一致（导出时核对）。</p>
        </div>
      </div>
    </section>
  );
}
