"""What the divergence guard and the durable writes cost, one JSON line per measurement (issue 27 items 5-6).

    OMP_NUM_THREADS=1 python scripts/bench_guard.py            # MiniMind2-Small (512/8, 25.8M) on the CPU

Per optimizer step: the finite check of loss and gradient norm (one host sync), and the extra gradient-norm pass when
--grad_clip 0. Per save: the fp16 finite check of the weights, and a weight save with and without fsync.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from model import checkpoint
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM


def ms_per_call(fn, n: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig())
    ids = torch.randint(0, 6400, (2, 64))
    out = model(ids, labels=ids)
    out.loss.backward()
    params = list(model.parameters())
    norm, loss = torch.nn.utils.clip_grad_norm_(params, 1.0), out.loss.detach()
    half = {k: v.detach().half() for k, v in model.state_dict().items()}
    tmpdir = tempfile.TemporaryDirectory()
    folder = Path(tmpdir.name)

    def rename_only():  # what atomic_save did before: no fsync
        tmp = folder / "before.pth.tmp"
        torch.save(half, tmp)
        os.replace(tmp, folder / "before.pth")

    rows = [("per-step finite check of loss and grad norm (host sync)",
             lambda: bool(torch.stack([torch.isfinite(norm), torch.isfinite(loss)]).all()), 1000),
            ("grad norm pass with --grad_clip 0", lambda: torch.nn.utils.get_total_norm([p.grad for p in params]), 20),
            ("pre-save fp16 finite check of the weights",
             lambda: checkpoint.nonfinite_tensors(model.state_dict(), torch.float16), 5),
            ("save fp16 weights, rename only (before)", rename_only, 5),
            ("save fp16 weights, fsync file and folder (now)", lambda: checkpoint.atomic_save(half, folder / "now.pth"),
             5)]
    for what, fn, n in rows:
        print(json.dumps({"what": what, "model": "512/8 dense, 25.8M", "device": "cpu",
                          "threads": torch.get_num_threads(), "ms": round(ms_per_call(fn, n), 3)}), flush=True)
    tmpdir.cleanup()


if __name__ == "__main__":
    main()
