import { useState } from "react";
import { bytes, millions, preset, shape } from "./facts";
import { PresetPicker, Src } from "./common";

/** 架构总览: the data flow through the model with the selected preset's real sizes and parameter counts. */
export function ArchitectureTab() {
  const [key, setKey] = useState("small");
  const p = preset(key);
  const c = p.config as Record<string, number>;
  const pr = p.params;
  const steps = [
    ["input_ids", "[B, T]", "分词器输出的 token id"],
    ["embed_tokens", `[B, T, ${c.hidden_size}]`, `词表 ${c.vocab_size} × 宽度 ${c.hidden_size}，与 lm_head 共享`],
    [`${c.num_hidden_layers} × MiniMindBlock`, `[B, T, ${c.hidden_size}]`,
      `RMSNorm → GQA 注意力 (${c.num_attention_heads} 个 Q 头 / ${c.num_key_value_heads} 个 KV 头, head_dim ${c.head_dim}) + 残差 → RMSNorm → ` +
      (p.config.use_moe
        ? `MoE（${c.n_routed_experts} 个路由专家选 ${c.num_experts_per_tok} 个 + ${c.n_shared_experts} 个共享专家，宽 ${c.intermediate_size}）`
        : `SwiGLU FFN（中间宽度 ${c.intermediate_size}）`) + " + 残差"],
    ["norm", `[B, T, ${c.hidden_size}]`, "最后一个 RMSNorm"],
    ["lm_head", `[B, T, ${c.vocab_size}]`, "每个位置对下一个 token 的 logits"],
  ];
  return (
    <section>
      <h2>架构总览 / Architecture</h2>
      <p>
        数值由 <Src path="scripts/tutorial/model_facts.py" symbol="preset_facts" /> 在 meta 设备上实例化{" "}
        <Src path="model/model_minimind.py" symbol="MiniMindForCausalLM" /> 得到（预设来自{" "}
        <Src path="model/model_minimind.py" symbol="PRESETS" />），不是手写的。
      </p>
      <PresetPicker value={key} onChange={setKey} />
      <div className="grid2">
        <div className="card">
          <h3>{p.title}: {millions(pr.total)} 参数</h3>
          <ol className="flow">
            {steps.map(([name, s, what]) => (
              <li key={name}><b>{name}</b> <code>{s}</code><div className="muted">{what}</div></li>
            ))}
          </ol>
        </div>
        <div className="card">
          <h3>参数从哪里来 / where the parameters are</h3>
          <table className="tbl">
            <tbody>
              <tr><td>词嵌入（= lm_head，共享）</td><td>{millions(pr.embedding)}</td></tr>
              <tr><td>每层注意力 q/k/v/o</td><td>{millions(pr.attention_per_layer)}</td></tr>
              <tr><td>每层 {p.config.use_moe ? "MoE（门控 + 专家）" : "FFN"}</td><td>{millions(pr.mlp_per_layer)}</td></tr>
              <tr><td>全部 RMSNorm</td><td>{pr.norms.toLocaleString()}</td></tr>
              <tr><td>总计（共享权重只算一次）</td><td><b>{millions(pr.total)}</b> ({pr.total.toLocaleString()})</td></tr>
              {p.config.use_moe ? <tr><td>每个 token 实际参与计算</td><td>{millions(pr.active_per_token)}</td></tr> : null}
              <tr><td>state_dict 键数</td><td>{pr.state_dict_keys}</td></tr>
              <tr><td>KV cache / token（fp16）</td><td>{bytes(p.kv_cache_bytes_per_token_fp16)}</td></tr>
            </tbody>
          </table>
        </div>
      </div>
      <details className="card">
        <summary>第 0 层与全局张量的形状（state_dict）</summary>
        <table className="tbl mono">
          <tbody>
            {Object.entries(p.state_dict_shapes).map(([k, s]) => (
              <tr key={k}><td className="code">{k}</td><td>{shape(s)}</td></tr>
            ))}
          </tbody>
        </table>
      </details>
    </section>
  );
}
