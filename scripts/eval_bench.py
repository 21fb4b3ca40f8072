"""Measure what a model learned: held-out bits per character, multiple choice by log-likelihood, generation checks.

    python scripts/eval_bench.py --save_dir out/demo --weight full_sft        # one weight, every task
    python scripts/eval_bench.py --save_dir out/demo --compare untrained pretrain full_sft
    python scripts/eval_bench.py --load_from out/minimind-hf --tasks heldout mc # a transformers folder
    python scripts/eval_bench.py --weight full_sft --lora_weight lora_identity  # adapter merged in
    python scripts/eval_bench.py --weight full_sft --lm_eval_tasks ceval-valid,cmmlu   # through lm-eval (hub data)

Output: one JSON object per metric in --output (default {save_dir}/eval_bench.jsonl, which scripts/report.py
reads) and a Markdown table on stdout; with --compare, one column per model. The tasks and how each is scored
are described in scripts/evals/bench.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from model.runtime import user_errors
from scripts.evals.bench import build_parser, run


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a console without UTF-8 shows '?' instead of crashing on 中文
        sys.stdout.reconfigure(errors="replace")
    with user_errors():
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
