"""MiniMind .pth <-> transformers folder in MiniMind's own format (model_type "minimind", remote code included).

    python scripts/convert_model.py to_hf --weight full_sft                      # -> out/MiniMind2-hf
    python scripts/convert_model.py to_pth --load_from ./MiniMind2 --save_weight full_sft   # -> out/full_sft_768.pth

`to_hf` writes a folder that `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads without this
repository; `to_pth` turns such a folder (e.g. a downloaded MiniMind2) back into a .pth + sidecar that the trainers
fine-tune with `--from_weight`; the round trip is bit-identical. For vLLM / llama.cpp, which do not run remote
code, use scripts/convert_to_hf.py. The conversion itself is scripts/convert/minimind.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from model.runtime import user_errors
from scripts.convert.minimind import build_parser, to_hf, to_pth


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        (to_hf if args.direction == "to_hf" else to_pth)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
