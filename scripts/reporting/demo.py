"""The demo's summary (scripts/demo_report.py is its command line): what the demo trained, whether it learned,
where the files are, what to run next, and how long the whole run took.

Learning is measured with the evaluation harness (scripts/evals/bench.py) on an untrained model of the same size
(the "before" column) and on each stage: held-out bits per character on dataset/demo/eval_heldout.jsonl (texts no
training file contains) per domain, and the idiom / poem next-line multiple-choice accuracies beside chance with
their 95% intervals. Only these two tasks run (the summary shows nothing else), each as one batched pass over all
its sequences sorted by length, with a progress line per model and task.
"""
import argparse
import time

from model.checkpoint import display_path, resolve_weight
from model.runtime import UserError
from scripts.evals import bench as eval_bench
from trainer import recipes

HELDOUT = eval_bench.HELDOUT
# sequences per forward pass: 64 scored the demo's 1,600 idiom choices 2.1x faster than 16 on 2 loaded CPU cores
# (52 s vs 110 s, 256/4 model); the padding cost stays small because sequences are sorted by length first
BATCH_SIZE = 64
TASK_NAMES = {"heldout": "held-out bits/char", "mc": "multiple choice"}


def harness_args(args, stage: str) -> argparse.Namespace:
    """eval_bench's flags for one stage of the demo folder (held-out + MC; generation is eval_llm.py's job here)."""
    bench = eval_bench.build_parser().parse_args(["--save_dir", args.save_dir, "--weight", stage, "--tasks",
                                                  "heldout", "mc", "--heldout_path", args.data_path,
                                                  "--max_chars", str(args.max_chars), "--limit", str(args.limit),
                                                  "--batch_size", str(BATCH_SIZE), "--mc_sets", *args.mc_sets]
                                                 + (["--device", args.device] if args.device else []))
    bench.untrained = False
    return bench


def run_harness(args, log=print) -> list:
    """The harness on an untrained model with the last stage's sizes, then on each stage: its metric rows, with a
    progress line per model and task (the stage takes minutes on a CPU)."""
    rows = []
    for stage in args.weights:  # fail before any scoring when a weight is missing
        path, _, _ = resolve_weight(harness_args(args, stage))
        if not path.is_file():
            raise UserError(f"weight file not found: {path}; run the demo first: bash scripts/demo.sh "
                            f"(it writes {args.save_dir}/)")
    for label in ["untrained", *args.weights]:
        bench = eval_bench.spec_args(harness_args(args, args.weights[-1]), label) if label == "untrained" \
            else harness_args(args, label)
        model, tokenizer = eval_bench.load_for_eval(bench)
        source = eval_bench.describe_source(bench)
        for task in ("heldout", "mc"):
            t0 = time.perf_counter()
            rows += eval_bench.evaluate(argparse.Namespace(**{**vars(bench), "tasks": [task]}), label, model,
                                        tokenizer, source)
            log(f"[report] {label}: {TASK_NAMES[task]} done in {time.perf_counter() - t0:.0f} s")
    return rows


def next_commands(save_dir: str, size: tuple = recipes.DEMO_SIZE) -> list:
    """Commands that work on this folder's weights as they are (sizes come from the sidecars), then the training
    recipes of trainer/recipes.py (DPO, tool calling, GRPO) with the flags that make them learn visibly here."""
    d = save_dir
    steps = [(f"{r.title} ({i}/{len(r.commands)})" if len(r.commands) > 1 else r.title,
              recipes.command_line(c, save_dir=d, checkpoint_dir=recipes.DEMO_CHECKPOINTS, size=size))
             for r in recipes.RECIPES for i, c in enumerate(r.commands, 1)]
    return [
        ("对话 / chat", f"python eval_llm.py chat --save_dir {d}"),
        ("固定问题 / fixed prompts", f"python eval_llm.py auto --save_dir {d} --weight pretrain"),
        ("API 服务 / OpenAI-compatible server", f"python scripts/serve_openai_api.py --save_dir {d}"),
        ("终端客户端 / client (2nd terminal)", "python scripts/chat_openai_api.py --tools scripts/tools_example.json"),
        ("网页 demo / web demo", f"streamlit run scripts/web_demo.py -- --weights_dir {d}"),
        ("转 HF（Llama）/ to transformers", (f"python scripts/convert_to_hf.py --save_dir {d} "
                                           f"--output_dir {d}/minimind-hf")),
    ] + steps


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def find(rows: list, model: str, task: str, subset: str, metric: str):
    return next((r for r in rows if (r["model"], r["task"], r["subset"], r["metric"]) == (model, task, subset, metric)),
                None)


def took_line(seconds, stage_seconds: dict) -> str:
    """'took 12.3 min (install 3.1 min, pretrain 5.0 min, ...)': the demo's whole wall time and its parts."""
    if not seconds:
        return ""
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stage_seconds.items())
    return f"，用时 {seconds / 60:.1f} 分钟 / took {seconds / 60:.1f} min" + (f" ({parts})" if parts else "")


def render(rows: list, stages: list, files: list, cfg: dict, save_dir: str, seconds, report_path,
           stage_seconds: dict = None) -> str:
    took = took_line(seconds, stage_seconds or {})
    models = ["untrained", *stages]
    lines = [f"# 演示结果 / Demo report{took}", "",
             f"模型 / model: hidden_size {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers", "",
             "## 留出集 bits/字（越低越好）/ held-out bits per character (lower is better)", "",
             "| domain | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    domains = [r["subset"] for r in rows if r["model"] == "untrained" and r["task"] == "heldout"]
    for d in domains:
        lines.append(f"| {d} | " + " | ".join(f"{find(rows, m, 'heldout', d, 'bits_per_char')['value']:.2f}"
                                               for m in models) + " |")
    last = stages[-1]
    before = find(rows, "untrained", "heldout", "all", "bits_per_char")["value"]
    after = find(rows, last, "heldout", "all", "bits_per_char")["value"]
    verdict = "learned / 学到了" if after < before - 0.5 else "NOT learned / 没学到"
    lines += ["", f"{last}: {before:.2f} -> {after:.2f} bits/char ({verdict})", "",
              "## 选择题（按对数似然）/ multiple choice by log-likelihood", "",
              "acc_norm (log-prob per character of the choice), with the 95% interval; chance = random pick.", "",
              "| set | chance | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for task in dict.fromkeys(r["task"] for r in rows if r["task"].endswith("_mc")):
        first = find(rows, "untrained", task, "all", "acc_norm")
        lines.append(f"| {task} (n={first['n']}) | {100 * first['chance']:.1f}% | "
                     + " | ".join(eval_bench.format_value(find(rows, m, task, "all", "acc_norm")) for m in models)
                     + " |")
    lines += ["", f"完整报告（各阶段曲线 PNG）/ full report with loss curves: `{display_path(report_path)}`",
              "", "## 文件 / files", ""]
    lines += [f"- `{display_path(f)}` ({human_size(f.stat().st_size)})" for f in files]
    lines += ["", "## 下一步 / next commands", ""]
    for what, cmd in next_commands(save_dir, (cfg["hidden_size"], cfg["num_hidden_layers"])):
        lines.append(f"- {what}: `{cmd}`")
    return "\n".join(lines) + "\n"
