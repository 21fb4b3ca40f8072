import { useState } from "react";
import { facts } from "./facts";
import { lrAt } from "./math";
import { LineChart, Src, visible } from "./common";

/** 训练流程: the stage chain and flags from each trainer's parser, a real SFT loss mask, the LR schedule. */
export function TrainingTab() {
  const stages = facts.stages;
  const [sel, setSel] = useState(stages[0].stage);
  const [ex, setEx] = useState(0);
  const s = stages.find((x) => x.stage === sel)!;
  const [total, setTotal] = useState(facts.lr[0].total);
  const [warmup, setWarmup] = useState(100);
  const peak = s.defaults.learning_rate;
  const n = 100;
  const mine = Array.from({ length: n + 1 }, (_, i) => {
    const step = Math.round((i * total) / n);
    return [step, lrAt(step, total, peak, warmup)] as [number, number];
  });
  const exported = facts.lr[1];
  const sample = facts.sft_examples[ex];
  const nTrained = sample.trained.filter(Boolean).length;
  return (
    <section>
      <h2>训练流程 / Training pipeline</h2>
      <p>
        每个阶段的 flag 和默认值都从该脚本自己的 <code>get_parser()</code> 读出（公共部分来自{" "}
        <Src path="trainer/trainer_utils.py" symbol="build_parser" />，强化学习来自{" "}
        <Src path="trainer/rl_utils.py" symbol="build_rl_parser" />）；“从哪个权重开始”即 <code>--from_weight</code> 的默认值。
      </p>
      <div className="chain">
        {stages.map((x) => (
          <button key={x.stage} className={x.stage === sel ? "btn primary" : "btn"} onClick={() => setSel(x.stage)}>
            {x.from_weight && x.from_weight !== "none" ? `${x.from_weight} → ` : ""}{x.stage}
          </button>
        ))}
      </div>
      <div className="card">
        <h3><Src path={s.script} /> — {s.description}</h3>
        <p>{s.summary}</p>
        <p className="muted">
          epochs {s.defaults.epochs} · batch {s.defaults.batch_size} · lr {s.defaults.learning_rate} · accumulation{" "}
          {s.defaults.accumulation_steps} · max_seq_len {s.defaults.max_seq_len} · 输出 / writes <code data-testid="stage-output">{s.output}</code>
        </p>
        <details>
          <summary>全部 {s.flags.length} 个参数（本阶段特有或默认值不同的加粗）</summary>
          <table className="tbl flag-rows">
            <thead><tr><th>flag</th><th>默认</th><th>说明</th></tr></thead>
            <tbody>
              {s.flags.map((f) => (
                <tr key={f.flag} className={!f.shared || f.stage_default ? "own" : ""}>
                  <td className="mono">{f.flag}</td><td className="mono">{JSON.stringify(f.default)}</td>
                  <td>{f.help}{f.choices ? ` (${f.choices.join(" / ")})` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      </div>
      <div className="card">
        <h3>损失掩码 / loss mask（<Src path="dataset/lm_dataset.py" symbol="build_sft_labels" />）</h3>
        <div className="row">
          {facts.sft_examples.map((e, i) => (
            <button key={e.source} className={i === ex ? "btn primary" : "btn"} onClick={() => setEx(i)}>{e.source}</button>
          ))}
        </div>
        <p>
          <Src path="dataset/lm_dataset.py" symbol="SFTDataset" /> 用对话模板渲染第 {sample.line} 行、分词，只在助手回答（含结尾的{" "}
          <code>&lt;|im_end|&gt;</code>）上计算损失：{sample.ids.length} 个 token 中 {nTrained} 个参与训练（高亮）。
        </p>
        <div className="tokens">
          {sample.tokens.map((tok, i) => (
            <span key={i} className={sample.trained[i] ? "tok trained" : "tok"} title={`id ${sample.ids[i]}`}>
              <span className="tok-text">{visible(tok)}</span>
            </span>
          ))}
        </div>
      </div>
      <div className="card">
        <h3>学习率 / LR schedule（<Src path="trainer/trainer_utils.py" symbol="lr_at" />）</h3>
        <p>线性 warmup，然后余弦从峰值降到峰值的 10%（warmup 为 0 时就是 MiniMind 的曲线）。峰值取本阶段默认 {peak}。</p>
        <div className="row">
          <label>总步数 <input type="number" min={10} value={total} aria-label="total steps"
            onChange={(e) => setTotal(Math.max(10, Number(e.target.value) || 10))} /></label>
          <label>warmup <input type="number" min={0} value={warmup} aria-label="warmup steps"
            onChange={(e) => setWarmup(Math.max(0, Number(e.target.value) || 0))} /></label>
        </div>
        <LineChart xLabel="step" yLabel="learning rate"
          series={[
            { name: `peak ${peak}, warmup ${warmup}`, color: "#2f6fde", points: mine },
            { name: `Python lr_at 导出（peak ${exported.peak}, warmup ${exported.warmup}）` , color: "#c9372c",
              points: exported.points.map(([x, y]) => [(x * total) / exported.total, (y * peak) / exported.peak]) },
          ]} />
      </div>
    </section>
  );
}
