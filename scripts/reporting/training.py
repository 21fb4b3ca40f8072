"""The training report's logic (scripts/report.py is its command line): every stage of a folder as a table,
loss / reward curves as PNGs, the evaluation table.

Reads what the trainers write next to their weights: `{stage}_{hidden}[_moe].metrics.jsonl` (one JSON line per log
line: step, tokens, loss, loss_smooth, lr, tokens_per_s, mfu_percent, elapsed_s and the stage's own values such
as dpo_margin or reward) and the `.json` sidecars; plus `{save_dir}/eval_bench.jsonl` from scripts/eval_bench.py
when it is there. Plots are drawn with matplotlib's headless Agg backend, one PNG per stage and one of all
stages' smoothed loss against tokens seen.
"""
import json
import sys
from pathlib import Path

from model.checkpoint import WEIGHT_NAME, atomic_write_text, ensure_writable_dir
from model.runtime import UserError, display_path, repo_path
from scripts.evals.bench import markdown_table

# MiniMind's chain; stages not listed come after, in the order their logs were written
STAGE_ORDER = ["pretrain", "full_sft", "lora", "dpo", "reason", "ppo_actor", "grpo", "spo", "full_dist", "tool_sft"]
# keys every log line has; anything else numeric is a stage's own value and gets its own panel
COMMON_KEYS = {"step", "total_steps", "epoch", "tokens", "loss", "loss_smooth", "lr", "tokens_per_s",
               "mfu_percent", "elapsed_s", "eta_s", "time", "stage"}


def read_metrics(path: Path) -> list:
    """The log's rows in step order; lines that do not parse (a partial last line of a killed run) are skipped,
    and a step logged twice keeps its last line."""
    by_step = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            continue
        by_step[step] = row
    return [by_step[s] for s in sorted(by_step)]


def find_stages(save_dir: Path) -> list:
    """[(stem, metrics path)] of every *.metrics.jsonl in save_dir, in chain order."""
    logs = [(f.name[:-len(".metrics.jsonl")], f) for f in save_dir.glob("*.metrics.jsonl")]

    def key(item):
        stem, f = item
        m = WEIGHT_NAME.match(stem + ".pth")
        stage = m.group("stage") if m else stem
        rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
        return (rank, f.stat().st_mtime, stem)
    return sorted(logs, key=key)


def wall_seconds(rows: list) -> float:
    """Training wall time over all segments of a resumed run (elapsed_s restarts at 0 in each process)."""
    total, last = 0.0, 0.0
    for r in rows:
        e = float(r.get("elapsed_s") or 0.0)
        if e < last:  # a new process after a resume
            total += last
        last = e
    return total + last


def summarize(stem: str, rows: list, save_dir: Path) -> dict:
    last = rows[-1]
    speeds = sorted(float(r["tokens_per_s"]) for r in rows[1:] if r.get("tokens_per_s")) or [0.0]
    mfus = [float(r["mfu_percent"]) for r in rows if r.get("mfu_percent") is not None]
    extras = sorted({k for r in rows for k, v in r.items()
                     if k not in COMMON_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)})
    sidecar = save_dir / f"{stem}.json"
    config = {}
    if sidecar.is_file():
        try:
            config = json.loads(sidecar.read_text(encoding="utf-8")).get("model_config", {})
        except ValueError:
            config = {}
    return {"stem": stem, "stage": last.get("stage", stem), "steps": int(last["step"]),
            "total_steps": int(last.get("total_steps", last["step"])), "tokens": int(last.get("tokens", 0)),
            "first_loss": float(rows[0]["loss"]), "final_loss": float(last["loss"]),
            "final_loss_smooth": float(last.get("loss_smooth", last["loss"])),
            "tokens_per_s": speeds[len(speeds) // 2], "mfu_percent": sum(mfus) / len(mfus) if mfus else None,
            "wall_s": wall_seconds(rows), "extras": extras, "config": config,
            "weight": (save_dir / f"{stem}.pth").is_file()}


def plot_stage(stem: str, rows: list, extras: list, path: Path) -> None:
    """Loss (raw and smoothed) and LR against the step, then one panel per stage value (reward, margin, ...)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    panels = 1 + len(extras)
    fig, axes = plt.subplots(panels, 1, figsize=(7, 2.8 + 2.2 * (panels - 1)), squeeze=False, sharex=True)
    ax = axes[0][0]
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", alpha=0.35, linewidth=1, label="loss")
    if any("loss_smooth" in r for r in rows):
        ax.plot(steps, [r.get("loss_smooth", r["loss"]) for r in rows], color="tab:blue", linewidth=2,
                label="loss (smoothed)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{stem}: {rows[-1]['step']} steps, {rows[-1].get('tokens', 0):,} tokens")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r.get("lr", 0.0) for r in rows], color="tab:orange", linewidth=1, linestyle="--", label="lr")
    lr_ax.set_ylabel("learning rate")
    lines = ax.get_lines() + lr_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    for i, name in enumerate(extras, 1):
        ax = axes[i][0]
        ax.plot([r["step"] for r in rows if name in r], [r[name] for r in rows if name in r], color="tab:green")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_all(stages: list, path: Path) -> None:
    """Every stage's smoothed loss against its own tokens seen, one line each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for stem, rows in stages:
        ax.plot([r.get("tokens", 0) / 1e6 for r in rows], [r.get("loss_smooth", r["loss"]) for r in rows],
                linewidth=2, label=stem)
    ax.set_xlabel("tokens seen in the stage (millions)")
    ax.set_ylabel("smoothed loss (nats/token)")
    ax.set_title("training loss per stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt_seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def render(save_dir: Path, summaries: list, plots: list, eval_rows: list, eval_path) -> str:
    lines = [f"# 训练报告 / Training report: `{display_path(save_dir)}`", ""]
    if summaries:
        cfg = next((s["config"] for s in summaries if s["config"]), {})
        if cfg:
            lines += [(f"模型 / model: hidden_size {cfg.get('hidden_size')}, {cfg.get('num_hidden_layers')} layers, "
                      f"{'MoE' if cfg.get('use_moe') else 'dense'}"), ""]
        lines += ["## 各阶段 / stages", "",
                  "| stage | steps | tokens | wall | tokens/s | MFU | first loss | final loss (smoothed) | stage values |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in summaries:
            mfu = f"{s['mfu_percent']:.1f}%" if s["mfu_percent"] is not None else "-"
            done = f"{s['steps']}" + (f"/{s['total_steps']}" if s["steps"] != s["total_steps"] else "")
            lines.append(f"| {s['stem']} | {done} | {s['tokens']:,} | {fmt_seconds(s['wall_s'])} | "
                         f"{s['tokens_per_s']:,.0f} | {mfu} | {s['first_loss']:.3f} | {s['final_loss']:.3f} "
                         f"({s['final_loss_smooth']:.3f}) | {', '.join(s['extras']) or '-'} |")
        lines += ["", "tokens/s: median over log lines after the first; loss in nats per trained token.", ""]
    else:
        lines += [("没有训练日志 / no *.metrics.jsonl logs in this folder (the trainers write them next to "
                  "their weights)."), ""]
    if plots:
        lines += ["## 曲线 / curves", ""]
        lines += [f"![{p.stem}]({p.relative_to(save_dir).as_posix()})" for p in plots]
        lines.append("")
    if eval_rows:
        lines += [f"## 评测 / evaluation (`{display_path(eval_path)}`)", "",
                  markdown_table([r for r in eval_rows if r.get("metric") != "samples"])]
        samples = [(r["model"], s) for r in eval_rows if r.get("task") == "auto_prompts" for s in r.get("samples", [])]
        if samples:
            lines += ["## 示例回答 / sample answers (greedy)", ""]
            last_model = samples[-1][0]
            for model, s in [x for x in samples if x[0] == last_model][:3]:
                answer = s["answer"].strip().replace("\n", " ") or "(empty)"
                lines.append(f"- **{model}** 💬 {s['prompt']}  \n  🤖 {answer[:300]}")
            lines.append("")
    else:
        lines += ["## 评测 / evaluation", "",
                  (f"no evaluation yet: python scripts/eval_bench.py --save_dir {display_path(save_dir)} "
                  f"--compare untrained pretrain full_sft"), ""]
    return "\n".join(lines)


def read_eval(path: Path) -> list:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and {"model", "task", "metric", "value"} <= row.keys():
            rows.append(row)
    return rows


def write_report(save_dir, eval_path=None, log=print) -> Path:
    """report.md and report/*.png in save_dir; returns the report's path."""
    save_dir = repo_path(save_dir)
    if not save_dir.is_dir():
        raise UserError(f"--save_dir {save_dir} does not exist; train something first (e.g. bash scripts/demo.sh)")
    stages = [(stem, read_metrics(f)) for stem, f in find_stages(save_dir)]
    stages = [(stem, rows) for stem, rows in stages if rows]
    eval_path = repo_path(eval_path) if eval_path else save_dir / "eval_bench.jsonl"
    eval_rows = read_eval(eval_path) if eval_path.is_file() else []
    if not stages and not eval_rows:
        raise UserError(f"{save_dir}: no *.metrics.jsonl training logs and no eval_bench.jsonl; train a stage "
                        f"(bash scripts/demo.sh) or run scripts/eval_bench.py first")
    summaries = [summarize(stem, rows, save_dir) for stem, rows in stages]
    plots = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # e.g. a GPU box without it: the tables still come out, the PNGs can be drawn elsewhere
        log("note: matplotlib is not installed; report.md without PNGs (pip install matplotlib, then rerun)")
        stages_to_plot = []
    else:
        stages_to_plot = stages
    if stages_to_plot:
        folder = save_dir / "report"
        ensure_writable_dir(folder)
        for (stem, rows), s in zip(stages, summaries):
            plot_stage(stem, rows, s["extras"], folder / f"{stem}.png")
            plots.append(folder / f"{stem}.png")
        plot_all(stages, folder / "loss_all.png")
        plots.insert(0, folder / "loss_all.png")
    path = save_dir / "report.md"
    atomic_write_text(render(save_dir, summaries, plots, eval_rows, eval_path), path)
    log(f"report: {display_path(path)} ({len(stages)} stages, {len(plots)} plots in "
        f"{display_path(save_dir / 'report')}, {len(eval_rows)} eval metrics)")
    return path
