"""What the demo trained, whether it learned, where the files are and what to run next.

    python scripts/demo_report.py                       # after bash scripts/demo.sh (reads out/demo/)
    python scripts/demo_report.py --save_dir out --weights pretrain full_sft

Learning is measured with the evaluation harness (scripts/eval_bench.py) on an untrained model of the same size
(the "before" column) and on each stage: held-out bits per character on dataset/demo/eval_heldout.jsonl (texts
no training file contains) per domain, and the idiom / poem next-line multiple-choice accuracies beside chance
with their 95% intervals. The harness's JSON lines go to {save_dir}/eval_bench.jsonl, scripts/report.py turns
them and the training logs into {save_dir}/report.md + {save_dir}/report/*.png, and this summary is printed and
written to {save_dir}/demo_summary.md.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import sys

from model.checkpoint import atomic_write_text, display_path, resolve_weight
from model.runtime import UserError, repo_path, user_errors
from scripts import eval_bench, report

HELDOUT = eval_bench.HELDOUT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="演示总结：未训练/预训练/SFT 的 bits/字与选择题、文件与下一步命令 / demo summary: "
                                            "bits per character and multiple choice before/after, files, next commands",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--save_dir", default="out/demo", help="权重目录 / folder with the demo's weights")
    p.add_argument("--weights", nargs="+", default=["pretrain", "full_sft"], help="要评测的阶段 / stages to score")
    p.add_argument("--data_path", default=HELDOUT, help="留出集 / held-out JSONL with 'text' and 'domain'")
    p.add_argument("--mc_sets", nargs="+", default=eval_bench.MC_SETS, metavar="NAME=PATH", help="选择题集 / MC sets")
    p.add_argument("--max_chars", type=int, default=0, help="每条文本最多评测的字符数，0 = 全文 / characters per text")
    p.add_argument("--limit", type=int, default=0, help="每个任务最多条数，0 = 全部 / items per task (0 = all)")
    p.add_argument("--seconds", type=float, default=None, help="演示用时（秒），写进报告 / demo wall time to report")
    p.add_argument("--device", default=None, help="评测设备，默认自动 / device for the evaluation")
    return p


def harness_args(args, stage: str) -> argparse.Namespace:
    """eval_bench's flags for one stage of the demo folder (held-out + MC; generation is eval_llm.py's job here)."""
    bench = eval_bench.build_parser().parse_args(["--save_dir", args.save_dir, "--weight", stage, "--tasks",
                                                  "heldout", "mc", "--heldout_path", args.data_path,
                                                  "--max_chars", str(args.max_chars), "--limit", str(args.limit),
                                                  "--mc_sets", *args.mc_sets]
                                                 + (["--device", args.device] if args.device else []))
    bench.untrained = False
    return bench


def run_harness(args) -> list:
    """The harness on an untrained model with the last stage's sizes, then on each stage: its metric rows."""
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
        rows += eval_bench.evaluate(bench, label, model, tokenizer, eval_bench.describe_source(bench))
    return rows


def next_commands(save_dir: str) -> list:
    """Commands that work on this folder's weights as they are (sizes come from the sidecars)."""
    d = save_dir
    return [
        ("对话 / chat", f"python eval_llm.py chat --save_dir {d}"),
        ("固定问题 / fixed prompts", f"python eval_llm.py auto --save_dir {d} --weight pretrain"),
        ("API 服务 / OpenAI-compatible server", f"python scripts/serve_openai_api.py --save_dir {d}"),
        ("终端客户端 / client (2nd terminal)", "python scripts/chat_openai_api.py --tools scripts/tools_example.json"),
        ("网页 demo / web demo", f"streamlit run scripts/web_demo.py -- --weights_dir {d}"),
        ("转 HF（Llama）/ to transformers", (f"python scripts/convert_to_hf.py --save_dir {d} "
                                           f"--output_dir {d}/minimind-hf")),
        ("继续 DPO / go on with DPO", (f"python trainer/train_dpo.py --save_dir {d} --checkpoint_dir checkpoints/demo "
                                     f"--hidden_size {{h}} --num_hidden_layers {{l}} --max_steps 20")),
    ]


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def find(rows: list, model: str, task: str, subset: str, metric: str):
    return next((r for r in rows if (r["model"], r["task"], r["subset"], r["metric"]) == (model, task, subset, metric)),
                None)


def render(rows: list, stages: list, files: list, cfg: dict, save_dir: str, seconds, report_path) -> str:
    took = f"，用时 {seconds / 60:.1f} 分钟 / took {seconds / 60:.1f} min" if seconds else ""
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
    for what, cmd in next_commands(save_dir):
        lines.append(f"- {what}: `{cmd.format(h=cfg['hidden_size'], l=cfg['num_hidden_layers'])}`")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        rows = run_harness(args)
        save_dir = repo_path(args.save_dir)
        eval_path = save_dir / "eval_bench.jsonl"
        atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), eval_path)
        report_path = report.write_report(save_dir, eval_path, log=lambda msg: None)
        files, cfg = [], None
        for stage in args.weights:
            path, cfg, _ = resolve_weight(harness_args(args, stage))
            files += [path, path.with_suffix(".json")]
        summary = render(rows, args.weights, files, cfg, args.save_dir, args.seconds, report_path)
        atomic_write_text(summary, save_dir / "demo_summary.md")
        print(summary, end="")
        print(f"(写入 / written to {display_path(save_dir / 'demo_summary.md')}, {display_path(report_path)}, "
              f"{display_path(save_dir / 'report')}/*.png, {display_path(eval_path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
