import { facts, millions } from "./facts";
import { Src, visible } from "./common";

/** 词嵌入与权重共享: the lookup, and lm_head reusing the same matrix (real tied check and savings). */
export function EmbeddingTab() {
  const t = facts.tiny;
  return (
    <section>
      <h2>词嵌入与权重共享 / Embeddings and weight tying</h2>
      <p>
        <Src path="model/model_minimind.py" symbol="MiniMindModel" /> 的 <code>embed_tokens</code> 是一张 [词表, 宽度] 的表，
        按 id 取行；<Src path="model/model_minimind.py" symbol="MiniMindForCausalLM" /> 的 <code>lm_head.weight</code>{" "}
        指向同一个张量（<code>self.lm_head.weight = self.model.embed_tokens.weight</code>），输出层把隐藏状态和每个词向量做点积。
      </p>
      <div className="card">
        <h3>共享省下多少 / what tying saves</h3>
        <table className="tbl">
          <thead><tr><th>预设</th><th>嵌入矩阵</th><th>共享时总参数</th><th>不共享时</th><th>占比</th></tr></thead>
          <tbody>
            {facts.presets.map((p) => (
              <tr key={p.key}>
                <td>{p.title}</td><td>{millions(p.params.embedding)}</td><td>{millions(p.params.total)}</td>
                <td>{millions(p.params.untied_total)}</td><td>{((100 * p.params.embedding) / p.params.total).toFixed(1)}%</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="card">
        <h3>在真实小模型上核对 / checked on a real tiny model</h3>
        <p>
          hidden {t.config.hidden_size}、{t.config.num_hidden_layers} 层的模型（种子 {t.seed}，在 <code>{t.train_data}</code>{" "}
          上训练 {t.train_steps} 步）：lm_head 与 embed_tokens 是同一块内存：<b>{String(t.tied_same_tensor)}</b>；
          state_dict 同时含两个键（MiniMind2 的 .pth 格式）：<b>{String(t.state_dict_has_both)}</b>。
        </p>
        <table className="tbl mono">
          <thead><tr><th>token</th><th>id</th><th>embed_tokens[id][:8]</th></tr></thead>
          <tbody>
            {t.embedding_rows.map((r) => (
              <tr key={r.id}><td>{visible(r.token)}</td><td>{r.id}</td><td>{r.first8.map((v) => v.toFixed(3)).join(" ")}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
