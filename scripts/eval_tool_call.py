"""Score tool calling: the held-out split of scripts/data_prepare_toolcall.py and a hand-written suite, in a
multi-round loop of model reply -> tool calls -> mock results -> model reply.

    python scripts/eval_tool_call.py --weight tool_sft                       # held-out set + hand-written suite
    python scripts/eval_tool_call.py --weight full_sft --out out/tool_eval_full_sft.jsonl    # the "before" score
    python scripts/eval_tool_call.py --base_url http://127.0.0.1:8998/v1     # our server, or vLLM on :8000/v1
    python scripts/eval_tool_call.py --weight tool_sft --mode interactive    # chat with the mock tools

Results: one JSON line per case and a {"summary": ...} line in --out (default {save_dir}/tool_eval_<weight>.jsonl),
and a table on stdout. The cases, the metrics and the two backends (native weights through model.engine.Engine,
an endpoint through the openai client) are in scripts/evals/tool_call.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from model.runtime import user_errors
from scripts.evals.tool_call import build_parser, run


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a console without UTF-8 shows '?' instead of crashing on 中文
        sys.stdout.reconfigure(errors="replace")
    with user_errors():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
