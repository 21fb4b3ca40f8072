import { facts } from "./facts";
import { Command, Src } from "./common";

const TARGETS: Record<string, string> = {
  hf: "Hugging Face transformers 目录", vllm: "vLLM", gguf: "GGUF / llama.cpp", ollama: "Ollama",
  serve: "本仓库的 OpenAI 兼容服务",
};

/** 部署: commands that our own parsers accepted at export time; external tools are marked as not run here. */
export function DeploymentTab() {
  const groups = Object.keys(TARGETS);
  return (
    <section>
      <h2>部署 / Deployment</h2>
      <p>
        每条本仓库的命令在导出时都交给对应脚本的 <code>build_parser()</code> 解析过（见{" "}
        <Src path="scripts/tutorial/stage_facts.py" symbol="validate_command" />），flag 改名会让导出失败。
        vLLM、llama.cpp、Ollama 的命令没有在本项目的机器上运行过。
      </p>
      {groups.map((g) => (
        <div className="card" key={g}>
          <h3>{TARGETS[g]}</h3>
          {facts.deployment.commands.filter((c) => c.target === g).map((c, i) => (
            <Command key={i} text={c.command} note={c.checked} />
          ))}
        </div>
      ))}
      {Object.entries(facts.deployment.script_flags).map(([script, flags]) => (
        <details className="card" key={script}>
          <summary><Src path={script} /> 的参数</summary>
          <table className="tbl flag-rows">
            <tbody>{flags.map((f) => <tr key={f.flag}><td className="mono">{f.flag}</td><td className="mono">{JSON.stringify(f.default)}</td><td>{f.help}</td></tr>)}</tbody>
          </table>
        </details>
      ))}
    </section>
  );
}
