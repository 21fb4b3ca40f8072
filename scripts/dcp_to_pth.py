"""A `--fsdp 1` resume folder (torch.distributed.checkpoint) -> the usual .pth + .json sidecar, in one process.

    python scripts/dcp_to_pth.py checkpoints/pretrain_768_resume.dcp            # -> out/pretrain_768.pth
    python scripts/dcp_to_pth.py checkpoints/pretrain_768_resume.dcp --out out/pretrain_step4000_768.pth

Training already writes the full .pth at every save; this is for a resume folder whose .pth was overwritten or lost.
The logic is model/distributed_checkpoint.py's `dcp_to_pth`.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json

from model.checkpoint import weight_path
from model.distributed_checkpoint import dcp_to_pth, require_complete
from model.runtime import display_path, repo_path, user_errors


def main(argv=None):
    p = argparse.ArgumentParser(description="DCP resume folder -> .pth + sidecar / 分布式检查点转 .pth")
    p.add_argument("folder", help="checkpoints/{stage}_{hidden}[_moe]_resume.dcp written by a --fsdp 1 run")
    p.add_argument("--out", default=None,
                   help="output .pth; default: {save_dir}/{save_weight}_{hidden}[_moe].pth of the run")
    args = p.parse_args(argv)
    with user_errors():
        folder = require_complete(repo_path(args.folder))
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        train, cfg = meta["train_args"], meta["model_config"]
        out = repo_path(args.out) if args.out else weight_path(train.get("save_dir", "out"),
                                                               train.get("save_weight", "pretrain"),
                                                               cfg["hidden_size"], cfg["use_moe"])
        dcp_to_pth(folder, out)
        print(f"wrote {display_path(out)} and its .json sidecar from {display_path(folder)}")


if __name__ == "__main__":
    main()
