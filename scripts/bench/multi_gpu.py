"""Several-GPU training measurements for scripts/gpu_multi_bench.sh (issue 31); one JSON line per result.

    torchrun --nproc_per_node 4 scripts/bench/multi_gpu.py worker --preset base [--fsdp 1] [--steps 30]
    python scripts/bench/multi_gpu.py scaling results.jsonl           # efficiency lines vs 1 GPU, from worker lines
    python scripts/bench/multi_gpu.py compare_weights A.dcp B.dcp     # max |difference| of two resume states
    python scripts/bench/multi_gpu.py big_layers --hidden_size 4096   # layers for a model past one card under DDP

`worker` runs inside torchrun: the shared loop (trainer_utils.train: autocast, accumulation, clipping, AdamW,
DDP or --fsdp 1) on synthetic full rows of token ids, as `train_pretrain.py --packing 1` would see them.
It prints, from rank 0: tokens/s of all ranks together (timed from after the first, warm-up/compile step to step
--steps, the trainer's own log line), peak device memory (max over ranks, after the model is built), the share
of step time with a collective kernel running (torch.profiler over --profile_steps steps after the timed ones;
NCCL kernels on CUDA, which overlap the backward under DDP, so this is busy time, not exposed time), and the
logged losses (for the DDP vs FSDP2 loss-curve check). A CUDA out-of-memory is a result ({"oom": true}), not a
crash: it is what the DDP run of the >1B model is expected to print.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parents[1])] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from model.distributed_checkpoint import load_plain_model
from model.model_minimind import PRESETS as MODEL_PRESETS, default_intermediate_size
from trainer import trainer_utils as tu
# the stage script's own parser: pretraining's defaults (on CUDA 128 x 2 rows of 340, compiled) are what is measured
from trainer.train_pretrain import get_parser

# model/'s presets (small 26M, base 104M, moe 145M, tiny) plus a tiny MoE for the CPU smoke run
PRESETS = {**MODEL_PRESETS, "tiny_moe": dict(MODEL_PRESETS["tiny"], use_moe=True)}
COLLECTIVE = re.compile(r"nccl|hccl|all_reduce|allreduce|reduce_scatter|all_gather|allgather", re.I)


class SyntheticRows(Dataset):
    """Fixed random full rows (input_ids, labels), every position labelled; the same rows on every rank."""

    def __init__(self, n: int, seq_len: int, vocab: int = 6400, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.rows = torch.randint(3, vocab, (n, seq_len), generator=g)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i], self.rows[i].clone()


def worker(argv) -> None:
    p = get_parser()
    p.add_argument("--preset", default="base", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps (the first is warm-up)")
    p.add_argument("--profile_steps", type=int, default=3, help="profiled steps after the timed ones (0 = none)")
    p.add_argument("--loss_every", type=int, default=5, help="log (and record) the loss every N steps")
    p.add_argument("--tag", default="", help="free text copied into the JSON line (e.g. 2node)")
    args = p.parse_args(argv)
    if "--hidden_size" in argv:
        args.preset = "custom"  # sizes given by flags (the >1B run)
    else:
        preset = PRESETS[args.preset]
        args.hidden_size, args.num_hidden_layers = preset["hidden_size"], preset["num_hidden_layers"]
        args.use_moe = int(preset.get("use_moe", False))
    args.max_steps = args.steps + args.profile_steps
    args.log_interval = args.loss_every
    # no weight files: a bench measures training, and the >1B model's .pth + DCP state would be ~80 GB of disk
    tu.Trainer.save = lambda self: None
    workdir = tempfile.mkdtemp(prefix="multi_gpu_")
    args.save_dir, args.checkpoint_dir = f"{workdir}/out", f"{workdir}/ckpt"
    with tu.user_errors():
        ctx, log, model, _ = tu.start_stage(args)
        cuda = ctx.device.type == "cuda"
        rows = args.batch_size * ctx.world_size * args.accumulation_steps * args.max_steps
        data = SyntheticRows(rows, args.max_seq_len)
        params = tu.count_parameters(model)
        lines, state = [], {"micro": 0, "prof": None}
        group = args.accumulation_steps

        def loss_fn(m, batch):
            step = state["micro"] // group  # optimizer steps finished before this micro-batch
            if state["micro"] % group == 0:
                if step == 1:  # timed from the end of the warm-up (compile) step to the end of step --steps
                    tu.synchronize(ctx.device)
                    state["t_start"] = time.perf_counter()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(ctx.device)
                if step == args.steps:
                    tu.synchronize(ctx.device)
                    state["t_end"] = time.perf_counter()
                    if args.profile_steps:
                        state["prof"] = start_profiler(cuda)
            state["micro"] += 1
            return tu.causal_lm_loss(m, batch)

        result = {"bench": "multi_gpu", "preset": args.preset, "hidden_size": args.hidden_size,
                  "num_hidden_layers": args.num_hidden_layers, "use_moe": args.use_moe, "params_m": params / 1e6,
                  "world_size": ctx.world_size, "nnodes": int(os.environ.get("GROUP_WORLD_SIZE", "0")) or None,
                  "mode": "fsdp2" if args.fsdp else ("ddp" if ctx.world_size > 1 else "single"),
                  "batch_size": args.batch_size, "accumulation_steps": args.accumulation_steps,
                  "seq_len": args.max_seq_len, "compile": int(args.use_compile), "dtype": str(ctx.dtype)[6:],
                  "device": torch.cuda.get_device_name(ctx.device) if cuda else ctx.device.type, "tag": args.tag}
        try:
            tu.train(args, ctx, model, data, loss_fn, log=lines.append)
        except torch.cuda.OutOfMemoryError as e:
            print(json.dumps({**result, "oom": True, "error": str(e).splitlines()[0][:300]}), flush=True)
            os._exit(0)  # other ranks may sit in a collective; torchrun tears them down
        tu.synchronize(ctx.device)
        state.setdefault("t_end", time.perf_counter())  # --profile_steps 0: the run ends with the timed steps
        if state["prof"] is not None:
            state["prof"].__exit__(None, None, None)
            wall = time.perf_counter() - state["t_end"]
            result["collective_share"] = collective_seconds(state["prof"], cuda) / wall
            result["profiled_step_s"] = wall / args.profile_steps
        timed_steps = args.steps - 1
        tokens = timed_steps * args.batch_size * args.accumulation_steps * ctx.world_size * args.max_seq_len
        result["tokens_per_s"] = tokens / (state["t_end"] - state["t_start"]) if timed_steps > 0 else None
        result["step_s"] = (state["t_end"] - state["t_start"]) / timed_steps if timed_steps > 0 else None
        result["losses"] = [float(x) for ln in lines for x in re.findall(r" step \d+/\d+ loss ([0-9.]+)", ln)]
        peak = torch.tensor([torch.cuda.max_memory_allocated(ctx.device) if cuda else 0], device=ctx.device)
        if ctx.distributed:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        result["peak_gib"] = round(peak.item() / 2 ** 30, 3) if cuda else None
        if ctx.is_main:
            print(json.dumps(result), flush=True)


def start_profiler(cuda: bool):
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    prof.__enter__()
    return prof


def collective_seconds(prof, cuda: bool) -> float:
    """Seconds with a collective running: NCCL kernels' device time on CUDA; on CPU (gloo) the c10d ops' CPU time,
    which includes waiting for the slowest rank."""
    total = 0.0
    for e in prof.key_averages():
        if not COLLECTIVE.search(e.key):
            continue
        if cuda:
            total += getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        elif e.key.startswith(("c10d::", "gloo:")):
            total += e.self_cpu_time_total
    return total / 1e6


def scaling(path: str) -> None:
    """Efficiency = tokens/s at N processes / (N x tokens/s at 1), per (preset, mode, tag), from worker lines."""
    rows = [json.loads(ln) for ln in open(path, encoding="utf-8") if ln.startswith("{")]
    rows = [r for r in rows if r.get("bench") == "multi_gpu" and r.get("tokens_per_s")]
    for r in rows:
        if r["world_size"] == 1 or r.get("tag"):
            continue
        base = [b for b in rows if b["preset"] == r["preset"] and b["mode"] == "single" and not b.get("tag")
                and b["hidden_size"] == r["hidden_size"]]  # the plain one-GPU run is the reference for both modes
        if base:
            single = base[0]["tokens_per_s"]
            print(json.dumps({"bench": "scaling", "preset": r["preset"], "mode": r["mode"],
                              "world_size": r["world_size"], "tokens_per_s": r["tokens_per_s"],
                              "tokens_per_s_1gpu": single,
                              "efficiency": r["tokens_per_s"] / (r["world_size"] * single)}))
    # DDP vs FSDP2 loss curves at the same preset and world size (same seed, same rows)
    for r in rows:
        if r["mode"] != "fsdp2" or r.get("tag"):
            continue
        ddp = [d for d in rows if d["preset"] == r["preset"] and d["world_size"] == r["world_size"]
               and d["mode"] in ("ddp", "single") and not d.get("tag")]
        if ddp and ddp[0]["losses"] and r["losses"]:
            diff = max(abs(a - b) for a, b in zip(ddp[0]["losses"], r["losses"]))
            print(json.dumps({"bench": "ddp_vs_fsdp2_loss", "preset": r["preset"], "world_size": r["world_size"],
                              "max_abs_loss_diff": diff, "steps_compared": min(len(ddp[0]["losses"]),
                                                                               len(r["losses"]))}))


def compare_weights(a: str, b: str, label: str) -> None:
    """Max |a - b| over all weights of two resume states (DCP folders or resume .pth files)."""
    def load(path):
        if path.endswith(".dcp"):
            return load_plain_model(path)[0].state_dict()
        return torch.load(path, map_location="cpu", weights_only=True)["model"]
    sa, sb = load(a), load(b)
    diff = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    step = lambda p: (torch.load(f"{p}/trainer.pth", weights_only=True) if p.endswith(".dcp")  # noqa: E731
                      else torch.load(p, weights_only=True))["step"]
    print(json.dumps({"bench": "resume", "label": label, "max_abs_weight_diff": diff, "identical": diff == 0.0,
                      "steps": [step(a), step(b)]}))


def big_layers(hidden_size: int, memory_gib: float) -> int:
    """Layers of a `hidden_size` MiniMind whose DDP state (fp32 weights + grads + 2 AdamW moments, 16 bytes per
    parameter) exceeds one card's memory by 10%: it cannot train there at any batch size."""
    kv = 2 * (hidden_size // 8)  # 2 KV heads of head_dim hidden/8 (8 attention heads)
    per_layer = 2 * hidden_size * hidden_size + 2 * hidden_size * kv + 3 * hidden_size * default_intermediate_size(
        hidden_size)
    return math.ceil(1.1 * memory_gib * 2 ** 30 / (16 * per_layer))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit("usage: multi_gpu.py worker|scaling|compare_weights|big_layers ... (see the docstring)")
    cmd, rest = argv[0], argv[1:]
    if cmd == "worker":
        worker(rest)
    elif cmd == "scaling":
        scaling(rest[0])
    elif cmd == "compare_weights":
        compare_weights(rest[0], rest[1], rest[2] if len(rest) > 2 else "")
    elif cmd == "big_layers":
        p = argparse.ArgumentParser()
        p.add_argument("--hidden_size", type=int, default=4096)
        p.add_argument("--memory_gib", type=float, default=None, help="default: this machine's GPU 0")
        a = p.parse_args(rest)
        mem = a.memory_gib or torch.cuda.get_device_properties(0).total_memory / 2 ** 30
        print(big_layers(a.hidden_size, mem))
    else:
        sys.exit(f"unknown command {cmd!r}: worker, scaling, compare_weights or big_layers")


if __name__ == "__main__":
    main()
