"""The training report: every stage in a folder as a table, loss / reward curves as PNGs, the evaluation table.

    python scripts/report.py --save_dir out/demo          # -> out/demo/report.md + out/demo/report/*.png
    python scripts/report.py --save_dir out --eval out/eval_bench.jsonl

What it reads and draws: scripts/reporting/training.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import sys

from model.runtime import user_errors
from scripts.reporting.training import read_metrics, wall_seconds, write_report  # noqa: F401 (used by tests)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="训练报告：各阶段表格、曲线 PNG、评测表 / training report: stage table, "
                                            "curve PNGs and the evaluation table",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--save_dir", default="out", help="权重与 *.metrics.jsonl 所在目录 / folder with weights and logs")
    p.add_argument("--eval", default=None, help="eval_bench.py 的 JSON lines / default {save_dir}/eval_bench.jsonl")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        write_report(args.save_dir, args.eval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
