"""Tool-calling SFT data: one MiniMind SFT JSONL (and a held-out split) from this project's corpus or a public
function-calling set.

    python scripts/data_prepare_toolcall.py                                   # local (offline): the bundled corpus
    python scripts/data_prepare_toolcall.py --source hermes --max_samples 10000
    python scripts/data_prepare_toolcall.py --source xlam --input xlam_function_calling_60k.json
    python trainer/train_full_sft.py --data_path dataset/sft_tool_call.jsonl --from_weight full_sft \\
        --save_weight tool_sft --max_seq_len 512

Prints one JSON summary line (rows read, kept, dropped per reason, calls per tool, output paths). The sources,
the record format and the split rule are described in scripts/toolcall/data.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import json
import sys

from model.runtime import user_errors
from scripts.toolcall.data import build_parser, prepare


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        summary = prepare(args)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
