import { facts, millions } from "./facts";
import { HeatMap, Src, visible } from "./common";

/** FFN 与 MoE: SwiGLU, and the tiny MoE model's real routing (top-2 of 4 + shared expert) and aux loss. */
export function MoeTab() {
  const t = facts.tiny;
  const m = t.moe;
  const moe = facts.presets.find((p) => p.config.use_moe)!;
  const c = moe.config as Record<string, number>;
  return (
    <section>
      <h2>SwiGLU 前馈网络与 MoE 路由</h2>
      <p>
        <Src path="model/model_minimind.py" symbol="FeedForward" />：down(silu(gate(x)) ⊙ up(x))，中间宽度{" "}
        <Src path="model/model_minimind.py" symbol="default_intermediate_size" />（8/3 × 宽度，取 64 的倍数）。
        <Src path="model/model_minimind.py" symbol="MoEFeedForward" />：门控 softmax 给 {m.n_routed_experts} 个专家打分，取 top-{m.top_k}{" "}
        并重新归一化，再加上 {m.n_shared_experts} 个总是参与的共享专家。{moe.title} 共 {millions(moe.params.total)} 参数，
        每个 token 只用 {millions(moe.params.active_per_token)}（每层 {c.n_routed_experts} 个专家里跑 {c.num_experts_per_tok} 个）。
      </p>
      <div className="card">
        <h3>小 MoE 模型第 {m.layer} 层的真实门控概率</h3>
        <HeatMap values={m.scores} rowLabels={t.tokens.map(visible)}
          colLabels={Array.from({ length: m.n_routed_experts }, (_, i) => `E${i}`)} />
        <table className="tbl mono">
          <thead><tr><th>token</th><th>选中的专家</th><th>归一化权重</th></tr></thead>
          <tbody>
            {t.tokens.map((tok, i) => (
              <tr key={i}><td>{visible(tok)}</td><td>{m.experts[i].map((e) => `E${e}`).join(" + ")} + 共享</td>
                <td>{m.weights[i].map((w) => w.toFixed(3)).join(" / ")}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="card">
        <h3>负载均衡损失 / load-balancing loss</h3>
        <p>
          <Src path="model/model_minimind.py" symbol="MoEFeedForward.load_balance_loss" />：α · Σₑ fₑ · Pₑ，fₑ = 专家 e 分到的路由槽占比 × E，
          Pₑ = 平均门控概率（seq_aux={String(m.seq_aux)}，按序列计算再平均）。α = {m.aux_loss_alpha}。
          本句各专家被选次数 {JSON.stringify(m.expert_counts)}，辅助损失 = <b>{m.aux_loss}</b>（完全均匀时为 α = {m.aux_loss_alpha}）。
          训练时它加到交叉熵上（<Src path="trainer/trainer_utils.py" symbol="causal_lm_loss" />）。
        </p>
      </div>
    </section>
  );
}
