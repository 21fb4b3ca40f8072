import { useState } from "react";
import { facts, preset, shape } from "./facts";
import { PresetPicker, Src, visible } from "./common";

/** 前向传播: the shapes each module really outputs (forward hooks on a real model of the preset's sizes). */
export function ForwardPassTab() {
  const [key, setKey] = useState("small");
  const p = preset(key);
  const tr = p.forward_trace;
  const t = facts.tiny;
  return (
    <section>
      <h2>前向传播 / Forward pass</h2>
      <p>
        导出脚本（<Src path="scripts/tutorial/model_facts.py" symbol="forward_trace" />）在该预设尺寸的真实模型上挂 forward hook，
        输入 batch {tr.batch}、{tr.seq} 个 token，记录每个模块的输出形状（只列第 0 层；其余各层相同）。
      </p>
      <PresetPicker value={key} onChange={setKey} />
      <table className="tbl mono card">
        <thead><tr><th>模块</th><th>类</th><th>输出形状</th></tr></thead>
        <tbody>
          {tr.rows.map((r) => (
            <tr key={r.module}>
              <td className="code">{r.module}</td><td>{r.class}</td>
              <td>{shape(r.out_shape)}{r.kv_shape ? ` (Q) · ${shape(r.kv_shape)} (K/V)` : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="card">
        <h3>小模型真跑一遍 / one real forward of the tiny model</h3>
        <p>
          输入「{t.sentence}」= {JSON.stringify(t.ids)}。训练 {t.train_steps} 步后损失 {t.loss_first_last[0]} → {t.loss_first_last[1]}。
          最后一个位置的下一个 token 概率前 5：
        </p>
        <ol>{t.next_token_top5.map((x) => <li key={x.id} className="mono">{visible(x.token)} (id {x.id}) {x.prob.toFixed(4)}</li>)}</ol>
      </div>
    </section>
  );
}
