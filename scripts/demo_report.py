"""What the demo trained, whether it learned, where the files are, what to run next and how long it all took.

    python scripts/demo_report.py                       # after bash scripts/demo.sh (reads out/demo/)
    python scripts/demo_report.py --save_dir out --weights pretrain full_sft

The harness's JSON lines go to {save_dir}/eval_bench.jsonl, the training report (scripts/report.py's) to
{save_dir}/report.md + {save_dir}/report/*.png, and the summary is printed and written to
{save_dir}/demo_summary.md. What is measured and how: scripts/reporting/demo.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import sys
import time

from model.checkpoint import atomic_write_text, display_path, resolve_weight
from model.runtime import UserError, repo_path, user_errors
from scripts.evals import bench as eval_bench
from scripts.reporting import training
from scripts.reporting.demo import HELDOUT, harness_args, render, run_harness


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
    p.add_argument("--started_at", type=float, default=None,
                   help="演示开始的 Unix 时间；用时算到本报告写完 / the demo's start (Unix time): the reported time "
                        "runs to the end of this report, install and evaluation included")
    p.add_argument("--stage_seconds", nargs="*", default=[], metavar="NAME=SECONDS",
                   help="各阶段用时 / seconds per demo stage, listed after the total")
    p.add_argument("--device", default=None, help="评测设备，默认自动 / device for the evaluation")
    return p


def parse_stage_seconds(specs: list) -> dict:
    out = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--stage_seconds {spec!r}: expected NAME=SECONDS, e.g. install=190") from None
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    with user_errors():
        stage_seconds = parse_stage_seconds(args.stage_seconds)
        rows = run_harness(args, log)
        save_dir = repo_path(args.save_dir)
        eval_path = save_dir / "eval_bench.jsonl"
        atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), eval_path)
        report_path = training.write_report(save_dir, eval_path, log=lambda msg: log(f"[report] {msg}"))
        files, cfg = [], None
        for stage in args.weights:
            path, cfg, _ = resolve_weight(harness_args(args, stage))
            files += [path, path.with_suffix(".json")]
        seconds = args.seconds
        if args.started_at is not None:  # the whole demo: install, training, chat and this report
            seconds = time.time() - args.started_at
            stage_seconds["report"] = seconds - sum(stage_seconds.values())
        summary = render(rows, args.weights, files, cfg, args.save_dir, seconds, report_path, stage_seconds)
        atomic_write_text(summary, save_dir / "demo_summary.md")
        print(summary, end="")
        print(f"(写入 / written to {display_path(save_dir / 'demo_summary.md')}, {display_path(report_path)}, "
              f"{display_path(save_dir / 'report')}/*.png, {display_path(eval_path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
