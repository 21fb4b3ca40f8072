import { useMemo, useRef, useState } from "react";
import { api, apiUrl, savedManager } from "./api";
import {
  aggregate, McpClient, METRICS, MOCK_TOOLS, runMockTool, runToolLoop, scoreCase,
  type Call, type CaseScore, type JsonObject, type ToolSchema, type TraceEntry,
} from "./tools";
import { DEFAULT_TIMEOUT_S, endpointProblem, explainFailure, listModels, requestSignal, resolveEndpoint } from "./endpoint";

const PRESETS = [
  { id: "ours", label: "本项目 API 服务 / our server (8998)", url: "http://127.0.0.1:8998/v1" },
  { id: "vllm", label: "vLLM (8000)", url: "http://127.0.0.1:8000/v1" },
  { id: "proxy", label: "同源代理 / same-origin proxy (docker web: /v1)", url: "./v1" },
  { id: "custom", label: "自定义 / custom", url: "" },
];

type SuiteCase = { id: string; lang: string; tools: string[]; question: string; expected: Call[] };
type CaseRow = { id: string; question: string; score: CaseScore; final: string | null; calls: Call[]; error?: string };

function TraceView({ trace }: { trace: TraceEntry[] }) {
  return (
    <ol className="trace" data-testid="trace">
      {trace.map((t, i) => (
        <li key={i}>
          {t.kind === "model" ? (
            <>
              <b>模型 / model</b> <span className="muted">round {t.round} · {t.ms.toFixed(0)} ms</span>
              {t.calls.map((c, j) => <pre className="text" key={j}>→ {c.name}({JSON.stringify(c.arguments)})</pre>)}
              {t.invalid.map((raw, j) => <pre className="text error" key={j}>invalid arguments: {raw}</pre>)}
              {t.content ? <pre className="text">{t.content}</pre> : null}
            </>
          ) : (
            <>
              <b>工具 / tool</b> <code>{t.name}</code> <span className="muted">{t.ms.toFixed(1)} ms</span>
              <pre className="text">{JSON.stringify(t.result)}</pre>
            </>
          )}
        </li>
      ))}
    </ol>
  );
}

export default function ToolPlayground() {
  const [preset, setPreset] = useState("ours");
  const [customUrl, setCustomUrl] = useState("");
  const [apiKey, setApiKey] = useState("");
  const [model, setModel] = useState("minimind");
  const [models, setModels] = useState<string[]>([]);
  const [source, setSource] = useState<"browser" | "mcp">("browser");
  const [tools, setTools] = useState<ToolSchema[]>(MOCK_TOOLS);
  const [enabled, setEnabled] = useState<Record<string, boolean>>({});
  const [maxRounds, setMaxRounds] = useState(4);
  const [prompt, setPrompt] = useState("北京今天天气怎么样？");
  const [trace, setTrace] = useState<TraceEntry[]>([]);
  const [final, setFinal] = useState<string | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [rows, setRows] = useState<CaseRow[]>([]);
  const [summary, setSummary] = useState<Record<string, number | null> | null>(null);
  const [timeoutS, setTimeoutS] = useState(DEFAULT_TIMEOUT_S);
  const cancelRef = useRef<(() => void) | null>(null);

  const rawUrl = preset === "custom" ? customUrl : PRESETS.find((p) => p.id === preset)!.url;
  const urlProblem = endpointProblem(rawUrl);
  const baseUrl = urlProblem ? rawUrl.trim() : resolveEndpoint(rawUrl, window.location.href);
  const origin = window.location.origin;
  /** Run one request batch with the Cancel button and the timeout wired in; errors become one readable line. */
  const guarded = async (work: (signal: AbortSignal) => Promise<void>) => {
    if (urlProblem) { setError(urlProblem); return; }
    const req = requestSignal(timeoutS);
    cancelRef.current = req.cancel;
    setBusy(true);
    try {
      await work(req.signal);
    } catch (e) {
      setError(explainFailure(e, baseUrl, req.signal, timeoutS, origin));
    } finally {
      req.done();
      cancelRef.current = null;
      setBusy(false);
    }
  };
  const active = useMemo(() => tools.filter((t) => enabled[t.function.name] !== false), [tools, enabled]);
  const mcp = () => {
    const m = savedManager();
    if (!m.token) throw new Error("先在「训练管理」标签页连接管理服务 / connect to the manager in the training tab first");
    return new McpClient(apiUrl(m, "/mcp"), m.token);
  };
  const runner = () => {
    if (source === "browser") return (name: string, args: JsonObject) => runMockTool(name, args);
    const client = mcp();
    return (name: string, args: JsonObject) => client.call(name, args);
  };

  const loadModels = () => {
    setError("");
    return guarded(async (signal) => {
      const ids = await listModels(baseUrl, apiKey, signal, origin);
      setModels(ids);
      setModel(ids[0]);
    });
  };

  const switchSource = async (s: "browser" | "mcp") => {
    setError("");
    setSource(s);
    if (s === "browser") { setTools(MOCK_TOOLS); return; }
    try {
      setTools(await mcp().listTools());
    } catch (e) {
      setError((e as Error).message);
      setSource("browser");
      setTools(MOCK_TOOLS);
    }
  };

  const send = () => {
    setError(""); setTrace([]); setFinal(null);
    return guarded(async (signal) => {
      const r = await runToolLoop({ baseUrl, apiKey, model, tools: active, messages: [{ role: "user", content: prompt }],
                                    runTool: runner(), maxRounds, signal, origin,
                                    onTrace: (t) => setTrace((old) => [...old, t]) });
      setFinal(r.final);
    });
  };

  const autoTest = () => {
    setError(""); setRows([]); setSummary(null);
    return guarded(async (signal) => {
      const m = savedManager();
      if (!m.token) throw new Error("自动测试的用例来自管理服务（eval_tool_call.py 的 SUITE）：先在「训练管理」连接 / the cases come from the manager: connect in the training tab first");
      const { cases } = await api<{ cases: SuiteCase[] }>(m, "/api/tools");
      const run = runner();
      const scores: CaseScore[] = [];
      for (const c of cases) {
        if (signal.aborted) break;
        const offered = tools.filter((t) => c.tools.includes(t.function.name));
        try {
          const r = await runToolLoop({ baseUrl, apiKey, model, tools: offered, messages: [{ role: "user", content: c.question }],
                                        runTool: run, maxRounds, signal, origin });
          const s = scoreCase(c.expected, r.first, r.final, r.results, c.question);
          scores.push(s);
          setRows((old) => [...old, { id: c.id, question: c.question, score: s, final: r.final, calls: r.first.calls }]);
        } catch (e) {
          const s = scoreCase(c.expected, { calls: [], invalid_blocks: 0 }, null, [], c.question);
          scores.push(s);
          if (signal.aborted) throw e; // cancelled or timed out: the whole suite stops with that message
          setRows((old) => [...old, { id: c.id, question: c.question, score: s, final: null, calls: [],
                                      error: explainFailure(e, baseUrl, signal, timeoutS, origin) }]);
        }
        setSummary(aggregate(scores));
      }
    });
  };

  const mark = (v: boolean | null) => (v === null ? "-" : v ? "✓" : "✗");
  return (
    <section className="tools">
      <h2>工具测试 / Tool playground</h2>
      <div className="card">
        <div className="row">
          <label>端点 / endpoint{" "}
            <select aria-label="endpoint preset" value={preset} onChange={(e) => setPreset(e.target.value)}>
              {PRESETS.map((p) => <option key={p.id} value={p.id}>{p.label}</option>)}
            </select>
          </label>
          {preset === "custom" ? <input aria-label="custom endpoint" value={customUrl} placeholder="http://host:port/v1"
                                        aria-invalid={customUrl && urlProblem ? true : undefined}
                                        onChange={(e) => setCustomUrl(e.target.value)} size={30} /> : <code>{baseUrl}</code>}
          {preset === "custom" && customUrl && urlProblem ? <span className="field-error" data-testid="url-problem">{urlProblem}</span> : null}
          <label>API key <input type="password" value={apiKey} onChange={(e) => setApiKey(e.target.value)} size={12} /></label>
        </div>
        <div className="row">
          <label>模型 / model{" "}
            <input aria-label="model" value={model} onChange={(e) => setModel(e.target.value)} list="models" size={16} />
            <datalist id="models">{models.map((m) => <option key={m} value={m} />)}</datalist>
          </label>
          <button className="btn" disabled={busy} onClick={loadModels}>读取 /models</button>
          <label>工具来源 / tools{" "}
            <select aria-label="tool source" value={source} onChange={(e) => void switchSource(e.target.value as "browser" | "mcp")}>
              <option value="browser">浏览器模拟 / simulated in the browser</option>
              <option value="mcp">MCP 服务 / MCP server (manager /mcp)</option>
            </select>
          </label>
          <label>超时 / timeout (s) <input type="number" aria-label="timeout seconds" min={1} max={3600} value={timeoutS}
            onChange={(e) => setTimeoutS(Math.max(1, Number(e.target.value) || DEFAULT_TIMEOUT_S))} style={{ width: 60 }} /></label>
          <label>最多轮数 / max rounds <input type="number" min={1} max={8} value={maxRounds} onChange={(e) => setMaxRounds(Number(e.target.value) || 1)} style={{ width: 50 }} /></label>
        </div>
        <p className="muted">
          跨端口访问需要服务允许本页来源，例如 <code>python scripts/serve_openai_api.py --cors_origins {window.location.origin}</code>；
          docker 部署里用“同源代理”。 Model output is shown as plain text, never as HTML.
        </p>
        <div className="row">
          {tools.map((t) => (
            <label key={t.function.name} title={t.function.description}>
              <input type="checkbox" checked={enabled[t.function.name] !== false}
                     onChange={(e) => setEnabled({ ...enabled, [t.function.name]: e.target.checked })} /> {t.function.name}
            </label>
          ))}
        </div>
        {error ? <p className="error" role="alert">{error}</p> : null}
      </div>

      <div className="grid2">
        <div className="card">
          <h3>对话 / Chat</h3>
          <textarea aria-label="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} rows={3} style={{ width: "100%" }} />
          <div className="row">
            <button className="btn primary" disabled={busy} onClick={send}>发送 / Send</button>
            <button className="btn" disabled={!busy} onClick={() => cancelRef.current?.()}>取消 / Cancel</button>
          </div>
          <TraceView trace={trace} />
          {final !== null ? <><h4>最终回答 / final answer</h4><pre className="text" data-testid="final">{final}</pre></> : null}
        </div>
        <div className="card">
          <h3>自动测试 / Auto-test <span className="muted">(eval_tool_call.py suite)</span></h3>
          <button className="btn primary" disabled={busy} onClick={autoTest}>运行 / Run suite</button>
          {summary ? (
            <table data-testid="summary"><tbody>
              <tr><td>cases</td><td>{summary.cases}</td></tr>
              {METRICS.map((k) => <tr key={k}><td>{k}</td><td>{summary[k] === null ? "-" : (summary[k] as number).toFixed(3)}</td></tr>)}
            </tbody></table>
          ) : null}
          <table>
            <thead><tr><th>case</th><th>call</th><th>name</th><th>args</th><th>final</th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} title={r.question}>
                  <td>{r.id}{r.error ? <span className="error"> {r.error}</span> : null}</td>
                  <td>{r.score.should_call ? mark(r.score.detected) : mark(r.score.no_call_correct)}</td>
                  <td>{mark(r.score.name_correct)}</td><td>{mark(r.score.exact)}</td>
                  <td><pre className="text">{r.final ?? ""}</pre></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
    </section>
  );
}
