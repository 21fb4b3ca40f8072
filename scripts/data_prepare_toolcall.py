"""Tool-calling SFT data: one MiniMind SFT JSONL and a held-out split, generated from a library of 190+ real tools
(default, offline) or converted from this project's corpus or a public function-calling set.

    python scripts/data_prepare_toolcall.py                                   # local: real tools, held-out tools
    python scripts/data_prepare_toolcall.py --source local --max_samples 20000 --seed 7
    python scripts/data_prepare_toolcall.py --source corpus                   # the recorded corpus dialogues
    python scripts/data_prepare_toolcall.py --source hermes --max_samples 10000
    python scripts/data_prepare_toolcall.py --source xlam --input xlam_function_calling_60k.json
    python trainer/train_full_sft.py --data_path dataset/sft_tool_call.jsonl --from_weight full_sft \\
        --save_weight tool_sft --max_seq_len 512

Prints one JSON summary line (rows per kind or read/kept, tools train/held-out, drops, token lengths, output
paths). `local` also writes the held-out set in the BFCL v3 layout (--bfcl_dir, default <output>_bfcl/). The
generator is scripts/toolcall/synth.py; the other sources, the record format and their split rule are in
scripts/toolcall/data.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import json
import sys

from model.runtime import user_errors
from scripts.toolcall import data, synth
from scripts.toolcall.data import build_parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        summary = (synth.prepare if args.source == "local" else data.prepare)(args)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
