"""Run the follow-up recipes of the demo model (trainer/recipes.py: DPO, tool-calling SFT + evaluation, GRPO) on the
weights of `bash scripts/demo.sh` and print one JSON line per recipe with its learning signal at the start and the
end, e.g. {"recipe": "dpo", "seconds": 95.2, "signal": {"margin": [0.0, 0.41], "accuracy": [0.3, 0.9], ...}}.

    bash scripts/demo.sh && python scripts/check_recipes.py            # all three on out/demo
    python scripts/check_recipes.py --recipes dpo grpo
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import sys

from model.runtime import user_errors
from trainer import recipes


def main(argv=None) -> int:
    names = [r.name for r in recipes.RECIPES]
    p = argparse.ArgumentParser(description="演示模型上的配方是否在学 / do the demo model's recipes learn",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--save_dir", default=recipes.DEMO_DIR,
                   help="the demo's weights; the recipes start from its full_sft, whose sidecar gives the size")
    p.add_argument("--checkpoint_dir", default=recipes.DEMO_CHECKPOINTS, help="resume states of the recipe runs")
    p.add_argument("--recipes", nargs="+", default=names, choices=names, help="which recipes to run, in order")
    args = p.parse_args(argv)
    with user_errors():
        size = recipes.start_size(args.save_dir)
        for recipe in recipes.RECIPES:
            if recipe.name in args.recipes:
                row = recipes.run_recipe(recipe, args.save_dir, args.checkpoint_dir, size,
                                         log=lambda m: print(m, file=sys.stderr, flush=True))
                print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
