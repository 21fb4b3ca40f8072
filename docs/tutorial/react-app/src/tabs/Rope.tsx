import { useState } from "react";
import { facts } from "./facts";
import { ropeInvFreq, wavelengths, yarnRange } from "./math";
import { LineChart, Src } from "./common";

/** RoPE 与 YaRN: per-pair wavelengths from the exported inverse frequencies, and an interactive factor. */
export function RopeTab() {
  const dims = facts.rope.per_head_dim;
  const [d, setD] = useState(dims[0].head_dim);
  const [factor, setFactor] = useState(facts.rope.yarn.factor);
  const row = dims.find((x) => x.head_dim === d) ?? dims[0];
  const yarn = { ...facts.rope.yarn, factor };
  const custom = ropeInvFreq(d, facts.rope.theta, yarn);
  const { low, high } = yarnRange(d, facts.rope.theta, yarn);
  const series = [
    { name: "RoPE（训练时）", color: "#2f6fde", points: wavelengths(row.inv_freq).map((w, i) => [i, w] as [number, number]) },
    { name: `YaRN ×${facts.rope.yarn.factor}（导出值）`, color: "#c9372c",
      points: wavelengths(row.inv_freq_yarn).map((w, i) => [i, w] as [number, number]) },
  ];
  if (factor !== facts.rope.yarn.factor) {
    series.push({ name: `YaRN ×${factor}（浏览器计算）`, color: "#1f8a4c",
      points: wavelengths(custom).map((w, i) => [i, w] as [number, number]) });
  }
  const dots = facts.rope.relative_dot;
  return (
    <section>
      <h2>旋转位置编码 RoPE 与 YaRN</h2>
      <p>
        频率来自 <Src path="model/model_minimind.py" symbol="rope_inv_freq" />（θ = {facts.rope.theta}）：第 i 对维度每个位置转
        θ^(−2i/d) 弧度。YaRN（<Src path="model/model_minimind.py" symbol="YARN_DEFAULTS" />，推理时{" "}
        <code>--inference_rope_scaling 1</code>）保留转得快的维度（i &lt; {low}），把慢的维度（i &gt; {high}）除以 factor，中间线性过渡，
        让 {facts.rope.yarn.original_max_position_embeddings} 个训练位置拉长到 {facts.rope.yarn.original_max_position_embeddings * facts.rope.yarn.factor}。
      </p>
      <div className="row">
        <label>head_dim <select value={d} onChange={(e) => setD(Number(e.target.value))} aria-label="head_dim">
          {dims.map((x) => <option key={x.head_dim} value={x.head_dim}>{x.head_dim}</option>)}
        </select></label>
        <label>YaRN factor <input type="range" min={1} max={32} value={factor} aria-label="yarn factor"
          onChange={(e) => setFactor(Number(e.target.value))} /> {factor}</label>
      </div>
      <div className="card">
        <LineChart series={series} logY xLabel="维度对 i" yLabel="波长（token，对数坐标）" />
      </div>
      <div className="card">
        <h3>只和相对距离有关 / depends only on m − n</h3>
        <p>同一对随机 q、k 旋转到位置 m、n 后的点积（导出时用 <Src path="model/model_minimind.py" symbol="apply_rope" /> 计算）：</p>
        <table className="tbl mono">
          <thead><tr><th>m</th><th>n</th><th>m − n</th><th>q_m · k_n</th></tr></thead>
          <tbody>{dots.map((x) => <tr key={`${x.m}-${x.n}`}><td>{x.m}</td><td>{x.n}</td><td>{x.m - x.n}</td><td>{x.dot}</td></tr>)}</tbody>
        </table>
      </div>
    </section>
  );
}
