import { useCallback, useEffect, useEffectEvent, useMemo, useRef, useState } from "react";
import { api, followLog, saveManager, savedManager, type Manager } from "./api";
import {
  boundText, buildFlags, dataPathError, defaultText, effectiveDataPath, flagBounds, groupFlags, type FlagInfo, type StageInfo,
} from "./flags";
import LossChart from "./LossChart";
import type { Point } from "./chart";

type Run = {
  id: string; stage: string; status: string; flags: Record<string, unknown>; argv: string[]; nproc: number;
  started_at: number; ended_at: number | null; exit_code: number | null; weight: string; note?: string;
  progress?: Progress | null;
};
type Progress = {
  step: number; total_steps: number; loss: number; tokens_per_s: number; eta_s: number; percent: number | null;
  epoch: number; lr: number; mfu_percent: number | null;
};
type Devices = { kind: string; count: number; source: string; devices: { index: number; name: string }[] };
type FileEntry = { name: string; path: string; size_bytes: number };
type WeightEntry = FileEntry & { hidden_size?: number | null; num_hidden_layers?: number | null; use_moe?: boolean | null };

const MAX_LOG_LINES = 2000; // the page keeps the newest lines only; the full log stays in logs/ on the server
const LIVE = new Set(["starting", "running", "stopping"]);

function fmtSeconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "-";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${m % 60}m` : `${m}m${sec}s`;
}

function fmtBytes(n: number): string {
  return n > 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n > 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** The bounds a number field accepts, as the field's hint ("1 – 65536"); "" for flags without bounds. */
function boundsText(flag: FlagInfo): string {
  if (flag.type === "str" || flag.choices) return "";
  const { min, max } = flagBounds(flag);
  if (min === undefined && max === undefined) return "";
  return ` · 范围 / range ${min ?? "…"} – ${max === undefined ? "…" : boundText(max)}`;
}

function FlagField({ flag, value, error, onChange }: {
  flag: FlagInfo; value: string | undefined; error: string | undefined; onChange: (v: string) => void;
}) {
  const id = `flag-${flag.name}`;
  const errId = `${id}-error`;
  if (flag.kind === "refused") {
    return (
      <>
        <label htmlFor={id} className="muted">--{flag.name}</label>
        <span className="muted" id={id}>不可用 / refused: {flag.refused_reason}</span>
      </>
    );
  }
  return (
    <>
      <label htmlFor={id} title={flag.help}>--{flag.name}</label>
      {flag.choices ? (
        <select id={id} value={value ?? String(flag.default ?? "")} onChange={(e) => onChange(e.target.value)}
                aria-invalid={error ? true : undefined} aria-describedby={error ? errId : undefined}>
          {flag.default === null ? <option value="">(default)</option> : null}
          {flag.choices.map((c) => <option key={String(c)} value={String(c)}>{String(c)}</option>)}
        </select>
      ) : (
        <input id={id} value={value ?? ""} placeholder={defaultText(flag)} onChange={(e) => onChange(e.target.value)}
               aria-invalid={error ? true : undefined} aria-describedby={error ? errId : undefined} />
      )}
      <div className="help">
        {flag.help}{flag.roots ? ` · 限 ${flag.roots.map((r) => r + "/").join(" ")}` : ""}{boundsText(flag)}
        {error ? <div className="field-error" id={errId} role="alert">{error}</div> : null}
      </div>
    </>
  );
}

/** The flag named at the start of a manager error ("--batch_size 0: must be at least 1"), to show it at that field. */
function flagOfError(message: string): string | null {
  const m = /^(?:stage \S+: )?(?:argument )?--([A-Za-z0-9_]+)/.exec(message);
  return m ? m[1] : null;
}

type RunViewProps = {
  conn: Manager; runId: string;
  onRun: (run: Run) => void; onEnded: () => void; onError: (message: string) => void;
};

/**
 * One run's log (SSE, resumable) and metrics (polled while it runs). Keyed by run id and given the manager that
 * was connected (not the URL/token fields being edited), so typing in those fields never restarts the stream;
 * a new run id mounts a fresh view with an empty log.
 */
function RunView({ conn, runId, onRun, onEnded, onError }: RunViewProps) {
  const [log, setLog] = useState<string[]>([]);
  const [points, setPoints] = useState<Point[]>([]);
  const logRef = useRef<HTMLPreElement>(null);
  const runChanged = useEffectEvent(onRun);
  const ended = useEffectEvent(onEnded);
  const failed = useEffectEvent(onError);

  useEffect(() => {
    const ctl = new AbortController();
    void followLog(conn, runId, {
      onLine: (text) => setLog((old) => {
        const next = old.length >= MAX_LOG_LINES ? old.slice(old.length - MAX_LOG_LINES + 1) : old.slice();
        next.push(text);
        return next;
      }),
      onEnd: () => setLog((old) => [...old, "[end of log]"]),
      onError: (msg) => failed(msg),
    }, ctl.signal);
    let lastStep = -1;
    let stopped = false;
    const tick = async () => {
      try {
        const [{ run }, { points: pts }] = await Promise.all([
          api<{ run: Run }>(conn, `/api/runs/${runId}`),
          api<{ points: { step: number; loss: number }[] }>(conn, `/api/runs/${runId}/metrics?after_step=${lastStep}`),
        ]);
        if (stopped || ctl.signal.aborted) return;
        runChanged(run);
        if (pts.length) {
          lastStep = pts[pts.length - 1].step;
          setPoints((old) => [...old, ...pts.map((p) => ({ step: p.step, loss: p.loss }))]);
        }
        if (!LIVE.has(run.status)) {
          stopped = true;
          ended();
        }
      } catch (e) {
        failed((e as Error).message);
      }
    };
    void tick();
    const timer = setInterval(() => { if (!stopped) void tick(); }, 1500);
    return () => { stopped = true; ctl.abort(); clearInterval(timer); };
  }, [conn, runId]);

  useEffect(() => {
    const el = logRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [log]);

  return (
    <div className="grid2">
      <pre className="log" ref={logRef} data-testid="log">{log.join("\n")}</pre>
      <LossChart points={points} />
    </div>
  );
}

const NO_EDITS: Record<string, string> = {};
const OPEN_GROUPS = ["optimisation", "this stage", "model"]; // open at first: the flags most runs change

export default function TrainingPanel() {
  const [mgr, setMgr] = useState<Manager>(savedManager);
  // the manager of the last successful Connect: everything after connecting talks to it, not to the fields above
  const [conn, setConn] = useState<Manager | null>(null);
  const [error, setError] = useState("");
  const [serverFieldError, setServerFieldError] = useState<{ flag: string; message: string } | null>(null);
  const [devices, setDevices] = useState<Devices | null>(null);
  const [stages, setStages] = useState<StageInfo[]>([]);
  const [stageName, setStageName] = useState("pretrain");
  const [edits, setEdits] = useState<Record<string, Record<string, string>>>({});
  const [nproc, setNproc] = useState("");
  const [datasets, setDatasets] = useState<FileEntry[]>([]);
  const [weights, setWeights] = useState<WeightEntry[]>([]);
  const [runs, setRuns] = useState<Run[]>([]);
  const [viewId, setViewId] = useState<string | null>(null);
  const [current, setCurrent] = useState<Run | null>(null);
  const [busy, setBusy] = useState(false);
  // groups the user opened (or that opened to show an error) stay open; a controlled `open` would close them again
  const [openGroups, setOpenGroups] = useState<Record<string, boolean>>({});

  const stage = stages.find((s) => s.name === stageName);
  const stageEdits = edits[stageName] ?? NO_EDITS;
  const built = useMemo(() => {
    if (!stage) return { flags: {}, errors: [], fieldErrors: {} as Record<string, string> };
    const b = buildFlags(stage, stageEdits);
    const dataErr = b.fieldErrors.data_path ? null : dataPathError(effectiveDataPath(stage, stageEdits), datasets);
    if (dataErr) {
      b.errors.push(dataErr);
      b.fieldErrors.data_path = dataErr;
    }
    return b;
  }, [stage, stageEdits, datasets]);
  const fieldErrors: Record<string, string> = { ...built.fieldErrors };
  if (serverFieldError && !fieldErrors[serverFieldError.flag]) fieldErrors[serverFieldError.flag] = serverFieldError.message;

  const refreshLists = useCallback(async (m: Manager) => {
    const [st, ds, ws, rs] = await Promise.all([
      api(m, "/api/status"), api(m, "/api/datasets"), api(m, "/api/weights"), api(m, "/api/runs"),
    ]);
    setDevices(st.devices);
    setDatasets(ds.datasets);
    setWeights(ws.weights);
    setRuns(rs.runs);
    return st;
  }, []);

  const connect = useCallback(async (m: Manager) => {
    try {
      const st = await refreshLists(m);
      const sg = await api(m, "/api/stages");
      setStages(sg.stages);
      saveManager(m);
      setError("");
      setConn({ ...m });
      if (st.run) setViewId(st.run.id);
    } catch (e) {
      setConn(null);
      setError((e as Error).message);
    }
  }, [refreshLists]);

  // connect once on opening the tab when this browser tab already has a token (sessionStorage); from a timer, so
  // StrictMode's mount-unmount-mount in development cancels the first one instead of connecting twice
  useEffect(() => {
    const saved = savedManager();
    if (!saved.token) return;
    const t = setTimeout(() => void connect(saved), 0);
    return () => clearTimeout(t);
  }, [connect]);

  // a run's progress as the run view polls it: the header line, and the same run's row in the history table
  const onRun = useCallback((run: Run) => {
    setCurrent(run);
    setRuns((old) => old.map((r) => (r.id === run.id ? run : r)));
  }, []);
  const onEnded = useCallback(() => { if (conn) void refreshLists(conn).catch(() => undefined); }, [conn, refreshLists]);

  const start = async () => {
    if (!conn || built.errors.length) return; // the fields show what is wrong
    setBusy(true);
    setError("");
    setServerFieldError(null);
    try {
      const body: { stage: string; flags: Record<string, string | number>; nproc?: number } = { stage: stageName, flags: built.flags };
      if (nproc.trim()) body.nproc = Number.parseInt(nproc, 10);
      const { run } = await api<{ run: Run }>(conn, "/api/train/start", { method: "POST", body: JSON.stringify(body) });
      setCurrent(run);
      setViewId(run.id);
      await refreshLists(conn);
    } catch (e) {
      const message = (e as Error).message;
      const flag = flagOfError(message);
      if (flag && stage?.flags.some((f) => f.name === flag)) setServerFieldError({ flag, message });
      else setError(message);
    } finally {
      setBusy(false);
    }
  };

  const stop = async () => {
    if (!conn) return;
    setBusy(true);
    try {
      await api(conn, "/api/train/stop", { method: "POST" });
      await refreshLists(conn);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const running = current && LIVE.has(current.status) ? current : null;
  const prog = current?.progress;
  const setEdit = (name: string, v: string) => {
    setEdits({ ...edits, [stageName]: { ...stageEdits, [name]: v } });
    if (serverFieldError?.flag === name) setServerFieldError(null);
  };
  const connected = conn !== null;

  return (
    <section className="training">
      <h2>训练管理 / Training</h2>
      <div className="card">
        <div className="row">
          <label>管理服务 / manager URL
            <input value={mgr.base} placeholder="(本页所在服务 / this page's server)"
                   onChange={(e) => setMgr({ ...mgr, base: e.target.value })} size={28} />
          </label>
          <label>token
            <input type="password" aria-label="token" value={mgr.token} onChange={(e) => setMgr({ ...mgr, token: e.target.value })} size={30} />
          </label>
          <button className="btn primary" onClick={() => void connect(mgr)}>连接 / Connect</button>
          {connected ? <span className="ok">已连接 / connected</span> : null}
        </div>
        <p className="muted">
          启动 <code>python scripts/serve_train_manager.py</code> 时打印的 token（或 TRAIN_MANAGER_TOKEN）。
          It is sent as a header, kept only in this browser tab.
        </p>
        {error ? <p className="error" role="alert">{error}</p> : null}
      </div>

      {connected ? (
        <>
          <div className="grid2">
            <div className="card">
              <h3>设备 / Devices</h3>
              {devices ? (
                <p data-testid="devices">
                  {devices.kind.toUpperCase()} × {devices.count || 1}{" "}
                  <span className="muted">({devices.source}: {devices.devices.map((d) => d.name).join(", ")})</span>
                </p>
              ) : null}
              <h3>数据集 / Datasets</h3>
              <table><tbody>
                {datasets.map((d) => (
                  <tr key={d.path}>
                    <td><code>{d.path}</code></td><td>{fmtBytes(d.size_bytes)}</td>
                    <td><button className="btn" onClick={() => setEdit("data_path", d.path)}>用作 --data_path</button></td>
                  </tr>
                ))}
              </tbody></table>
              <h3>权重 / Weights (out/)</h3>
              {weights.length ? (
                <table><tbody>
                  {weights.map((w) => (
                    <tr key={w.path}>
                      <td><code>{w.path}</code></td><td>{fmtBytes(w.size_bytes)}</td>
                      <td>{w.hidden_size ? `${w.hidden_size}×${w.num_hidden_layers}${w.use_moe ? " MoE" : ""}` : ""}</td>
                    </tr>
                  ))}
                </tbody></table>
              ) : <p className="muted">out/ 里还没有权重 / no weights yet</p>}
            </div>

            <div className="card">
              <h3>启动训练 / Start a run</h3>
              <div className="row">
                <label>阶段 / stage{" "}
                  <select aria-label="stage" value={stageName} onChange={(e) => setStageName(e.target.value)}>
                    {stages.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
                  </select>
                </label>
                <label>进程数 / nproc <input value={nproc} onChange={(e) => setNproc(e.target.value)} size={3}
                  placeholder={devices && devices.count ? String(devices.count) : "1"} /></label>
                <button className="btn primary" disabled={busy || !!running || built.errors.length > 0} onClick={start}>开始 / Start</button>
                <button className="btn danger" disabled={busy || !running} onClick={stop}>停止 / Stop</button>
              </div>
              {stage ? <p className="muted">{stage.description} · <code>{stage.script}</code></p> : null}
              <p className="muted">发送的参数 / flags sent: <code data-testid="flags-preview">{JSON.stringify(built.flags)}</code></p>
              {built.errors.length ? <p className="error">先改正标红的字段 / fix the fields marked below ({built.errors.length})</p> : null}
              <div className="flag-groups">
                {stage ? groupFlags(stage).map(([group, flags]) => (
                  <details key={group}
                           open={(openGroups[group] ?? OPEN_GROUPS.some((g) => group.startsWith(g)))
                                 || flags.some((f) => fieldErrors[f.name] !== undefined)}
                           onToggle={(e) => { const open = e.currentTarget.open; setOpenGroups((o) => ({ ...o, [group]: open })); }}>
                    <summary>{group || "flags"}</summary>
                    <div className="flags">
                      {flags.map((f) => <FlagField key={f.name} flag={f} value={stageEdits[f.name]} error={fieldErrors[f.name]}
                                                 onChange={(v) => setEdit(f.name, v)} />)}
                    </div>
                  </details>
                )) : null}
              </div>
            </div>
          </div>

          <div className="card">
            <h3>运行 / Run {current ? <code>{current.id}</code> : null}</h3>
            {current ? (
              <p data-testid="run-status">
                <b className={current.status === "failed" ? "error" : ""}>{current.status}</b> · {current.stage}
                {prog ? <> · step {prog.step}/{prog.total_steps} ({prog.percent ?? "-"}%) · loss {prog.loss?.toFixed(4)}
                  {" · "}{Math.round(prog.tokens_per_s ?? 0).toLocaleString()} tokens/s
                  {running ? <> · ETA {fmtSeconds(prog.eta_s)}</> : null}</> : null}
                {current.exit_code !== null && current.exit_code !== undefined ? <> · exit {current.exit_code}</> : null}
                {current.note ? <span className="muted"> · {current.note}</span> : null}
              </p>
            ) : <p className="muted">还没有运行 / no run selected</p>}
            {prog && prog.total_steps && running ? <progress max={prog.total_steps} value={prog.step} style={{ width: "100%" }} /> : null}
            {conn && viewId ? <RunView key={viewId} conn={conn} runId={viewId} onRun={onRun} onEnded={onEnded} onError={setError} /> : null}
          </div>

          <div className="card">
            <h3>历史 / History</h3>
            <table>
              <thead><tr><th>id</th><th>stage</th><th>status</th><th>steps</th><th>started</th><th>weight</th></tr></thead>
              <tbody>
                {runs.map((r) => (
                  <tr key={r.id}>
                    <td><a href="#training" onClick={(e) => { e.preventDefault(); setViewId(r.id); }}>{r.id}</a></td>
                    <td>{r.stage}</td><td>{r.status}</td>
                    <td>{r.progress ? `${r.progress.step}/${r.progress.total_steps}` : "-"}</td>
                    <td>{new Date(r.started_at * 1000).toLocaleString()}</td>
                    <td><code>{r.status === "finished" ? r.weight : ""}</code></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      ) : null}
    </section>
  );
}
