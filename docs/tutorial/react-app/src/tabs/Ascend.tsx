import { facts } from "./facts";
import { Command, Src } from "./common";

/** 昇腾实战: our Dockerfile.ascend and run_all_npu.sh stages, presets and options (from its --help). */
export function AscendTab() {
  const a = facts.ascend;
  return (
    <section>
      <h2>昇腾实战 / Ascend hands-on</h2>
      <p className="muted">本页内容未在昇腾硬件上运行过；dry-run 输出是在 CPU 机器上生成的。</p>
      <div className="card">
        <h3>镜像 <Src path={a.dockerfile_path} /></h3>
        <Command text="docker build -f Dockerfile.ascend -t minimind-npu ." />
        <table className="tbl mono">
          <tbody>
            {Object.entries(a.dockerfile_args).map(([k, v]) => <tr key={k}><td className="code">ARG {k}</td><td className="code">{v}</td></tr>)}
            {Object.entries(a.dockerfile_env).map(([k, v]) => <tr key={k}><td className="code">ENV {k}</td><td className="code">{v}</td></tr>)}
          </tbody>
        </table>
        <details><summary>完整 Dockerfile</summary><pre>{a.dockerfile}</pre></details>
      </div>
      <div className="card">
        <h3><Src path="scripts/run_all_npu.sh" /> 的阶段与预设</h3>
        <p>阶段（按给出的顺序执行）：{a.all_stages.map((s) => <code key={s} className="chip">{s}</code>)}</p>
        <table className="tbl">
          <tbody>{Object.entries(a.presets).map(([k, v]) => <tr key={k}><td className="mono">{k}</td><td>{v.join(" → ")}</td></tr>)}</tbody>
        </table>
        <Command text="bash scripts/run_all_npu.sh all" note="下载 → 构建镜像 → 预训练 → SFT → DPO → 推理 → 评测" />
        <Command text="bash scripts/run_all_npu.sh --dry-run all" note="只打印命令与发现的问题，不运行" />
        <details>
          <summary>选项（来自 --help）</summary>
          <table className="tbl">
            <tbody>{a.options.map((o) => <tr key={o.option}><td className="mono">{o.option}</td><td>{o.help}</td></tr>)}</tbody>
          </table>
        </details>
      </div>
      <div className="card">
        <h3>demo 预设的 dry-run（真实输出）</h3>
        <pre>{a.demo_dry_run.join("\n")}</pre>
      </div>
    </section>
  );
}
