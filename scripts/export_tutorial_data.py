"""Facts for the interactive tutorial (docs/tutorial/react-app), computed from this repository's own code.

    python scripts/export_tutorial_data.py            # rewrite docs/tutorial/react-app/src/data/
    python scripts/export_tutorial_data.py --check    # exit 1 and name the stale files if the export is not current

What it writes (the app imports these files, so they are bundled into the static build; nothing is fetched):
- tutorial-data.json: preset shapes and parameter counts (model/model_minimind.py on the meta device), each
  trainer's flags from its own `get_parser()`, RoPE/YaRN inverse frequencies (`rope_inv_freq`, `precompute_rope`),
  the LR curve (`trainer_utils.lr_at`), attention / KV cache / MoE routing values from a tiny real model trained
  for a few steps with a fixed seed, SFT examples with their loss masks (`SFTDataset`), tokenizer parity cases
  (ids and pieces from the Python tokenizer, which the app's in-browser tokenizer must reproduce), deployment
  commands validated against each script's parser, and the Ascend Dockerfile / run_all_npu.sh stages.
- tokenizer.json, tokenizer_config.json: byte copies of model/'s, loaded by @huggingface/tokenizers in the browser.
- flag-bounds.json (the trainer's flag limits, shown in the training form) and tool-parity.json (mock-tool calls and
  results from scripts/toolcall/tool_mocks.py, which the browser copies must reproduce): scripts/tutorial/hands_on.py.

The logic lives in the scripts/tutorial/ package (model_facts, stage_facts, text_facts, hands_on, export); this
file only parses the flags.

Floats are rounded to 6 significant digits; `tests/test_tutorial_export.py` regenerates the export and compares it
with the committed one (floats within a small tolerance, everything else exactly).
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import sys
from pathlib import Path

from model.runtime import ROOT, user_errors
from scripts.tutorial.export import DEFAULT_OUT, check_export, write_export


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="教程数据导出 / export the tutorial app's facts from the code",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=DEFAULT_OUT, help="folder the app imports its data from")
    p.add_argument("--check", action="store_true",
                   help="compare a fresh export with --out_dir and exit 1 naming stale files; write nothing")
    args = p.parse_args(argv)
    with user_errors():
        out_dir = args.out_dir if args.out_dir.is_absolute() else ROOT / args.out_dir
        if args.check:
            check_export(out_dir)
            print(f"tutorial export in {out_dir} is current")
            return 0
        names = write_export(out_dir)
        print(f"wrote {', '.join(names)} to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
