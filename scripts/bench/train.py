"""Training throughput through the real training loop, one JSON line per measurement.

Modes:
- default: each preset on synthetic tokens (`trainer_utils.train`: autocast, accumulation, clipping, AdamW,
  logging), with the batch / sequence / compile you give; what `train_pretrain.py --packing 1` would log, without
  data loading.
- `--compare-defaults`: each preset at MiniMind's flags (32 x 8 x 340, eager), at this repo's defaults for the
  device (`train_pretrain.py` with no flags: on CUDA 128 x 2 x 340, compiled) and at the best settings (compiled,
  full 512-token rows, batch 128, no accumulation); with MFU, peak memory and recompiles after warm-up.
- `--e2e pretrain|full_sft`: the stage script itself (`main(argv)`, real data, loader workers, saves) with its
  defaults plus the flags after `--`; steady tokens/s from its own log lines (timed after the first step), the
  wall-clock average including start-up and compile, and the recompiles.

tokens/s is timed from after the first (warm-up / compile) optimizer step with the device synchronised; MFU uses the
datasheet peak (trainer_utils.PEAK_FLOPS) and, with `--measure_peak`, the bf16 matmul peak measured on this device.

scripts/bench_train.py is the command; sizes are model.model_minimind.PRESETS. The stage scripts are imported
here on purpose: what is measured is their own flags, defaults and main().
"""
import argparse
import io
import json
import re
import statistics
import tempfile
import time
from contextlib import redirect_stdout

import torch
from torch.utils.data import Dataset

from model.model_minimind import PRESETS
from trainer import train_full_sft, train_pretrain, trainer_utils
from trainer.trainer_utils import (
    UserError,
    causal_lm_loss,
    count_parameters,
    detect_device_type,
    flops_per_token,
    init_distributed_mode,
    init_model,
    train,
)

# --compare-defaults: name -> (batch_size, accumulation_steps, seq_len, use_compile); None = the device default
CONFIGS = {"minimind": (32, 8, 340, 0), "default": (None, None, 340, None), "best": (128, 1, 512, 1)}


class SyntheticTokens(Dataset):
    """Fixed random rows: (input_ids, labels) with every position labelled, like a packed pretraining row."""

    def __init__(self, rows: int, seq_len: int, vocab_size: int, seed: int = 0):
        self.data = torch.randint(3, vocab_size, (rows, seq_len), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], self.data[i]


def active_parameters(model) -> int:
    """Parameters one token passes through, counted as MiniMind counts size (tied embedding once; MoE: only the
    top-k routed experts): 92M for the 145M MoE preset, 104M for 768/16."""
    return round(flops_per_token(model, 0) / 6)


def bench(preset: str, args, out_dir: str, batch_size=None, accumulation=1, seq_len=None, use_compile=None,
          label=None) -> dict:
    """One preset through `train` on synthetic tokens; None for batch/accumulation/compile = the pretrain stage's
    default for the device (what `train_pretrain.py` with no flags picks)."""
    size = PRESETS[preset]
    hidden, layers, moe = size["hidden_size"], size["num_hidden_layers"], int(size.get("use_moe", False))
    steps = args.warmup_steps + args.steps
    seq_len = seq_len or args.seq_len
    flags = ["--hidden_size", str(hidden), "--num_hidden_layers", str(layers), "--use_moe", str(moe),
             "--max_seq_len", str(seq_len), "--max_steps", str(steps), "--log_interval", str(steps),
             "--save_interval", str(10 ** 9), "--num_workers", "0", "--save_dir", out_dir,
             "--checkpoint_dir", out_dir, "--save_weight", f"bench_{preset}",
             *(["--device", args.device] if args.device else []), *(["--dtype", args.dtype] if args.dtype else [])]
    for flag, value in (("--batch_size", batch_size), ("--accumulation_steps", accumulation),
                        ("--use_compile", use_compile)):
        if value is not None:
            flags += [flag, str(value)]
    targs = train_pretrain.get_parser().parse_args(flags)
    targs.data_path = "synthetic"
    ctx = init_distributed_mode(targs.device, targs.dtype)
    trainer_utils.resolve_device_defaults(targs, ctx.device.type, log=lambda msg: None)
    torch.manual_seed(0)
    model, _ = init_model(targs, ctx, log=lambda msg: None)
    rows = steps * targs.batch_size * targs.accumulation_steps
    data = SyntheticTokens(rows, seq_len, model.config.vocab_size)
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
    trainer = train(targs, ctx, model, data, causal_lm_loss, log=lambda msg: None)
    tps, mfu = trainer.throughput["tokens_per_s"], trainer.throughput["mfu_percent"]
    active = active_parameters(model)
    row = {"bench": "train_step", "preset": preset, **({"config": label} if label else {}),
           "params_m": round(count_parameters(model) / 1e6, 2), "active_params_m": round(active / 1e6, 2),
           "device": str(ctx.device), "device_name": device_name(ctx.device),
           "dtype": str(ctx.dtype).replace("torch.", ""), "batch_size": targs.batch_size,
           "accumulation_steps": targs.accumulation_steps, "seq_len": seq_len, "timed_steps": steps - 1,
           "compile": trainer.compile_options is not None, "tokens_per_s": round(tps, 1),
           "tokens_x_active_params_per_s": round(tps * active / 1e6, 1),
           "mfu_percent": None if mfu is None else round(mfu, 2), "recompiles": trainer.recompiles}
    if args.measured_peak:
        row["mfu_measured_peak_percent"] = round(100 * tps * trainer.fpt / args.measured_peak, 2)
    if ctx.device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30, 2)
    del trainer, model
    return row


def measure_matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """bf16 FLOP/s of a large square matmul on this device (the realistic ceiling MFU is also reported against)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    trainer_utils.synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    trainer_utils.synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


TPS_RE = re.compile(r"step (\d+)/(\d+) .*tokens/s ([\d,]+)(?: MFU ([\d.]+)%)?")


def e2e(stage: str, extra: list) -> dict:
    """Run a stage script's main() in this process and summarise its own log: steady tokens/s (median over log
    lines after the first step), wall-clock average (start-up, tokenizing, compile included), recompiles."""
    module = {"pretrain": train_pretrain, "full_sft": train_full_sft}[stage]
    seen = {}
    real_train = module.train

    def keep_trainer(*a, **k):
        seen["trainer"] = real_train(*a, **k)
        return seen["trainer"]

    module.train = keep_trainer
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with redirect_stdout(out):
            code = module.main(extra)
    except SystemExit as e:
        code = e.code
    finally:
        module.train = real_train
    wall = time.perf_counter() - start
    log = out.getvalue()
    if code not in (None, 0) or "trainer" not in seen:
        raise UserError(f"train_{stage}.py {' '.join(extra)} failed (exit {code}):\n{log[-2000:]}")
    trainer = seen["trainer"]
    lines = [m for m in TPS_RE.finditer(log) if int(m.group(1)) > 1]
    tps = [float(m.group(3).replace(",", "")) for m in lines]
    mfu = [float(m.group(4)) for m in lines if m.group(4)]
    args = trainer.args
    total_tokens = trainer.step * args.batch_size * args.accumulation_steps * args.max_seq_len
    return {"bench": "e2e", "stage": stage, "flags": extra, "device": str(trainer.ctx.device),
            "batch_size": args.batch_size, "accumulation_steps": args.accumulation_steps,
            "max_seq_len": args.max_seq_len, "num_workers": args.num_workers, "compile": trainer.compile_options,
            "steps": trainer.step, "epochs_crossed": trainer.epoch,
            "steady_tokens_per_s": round(statistics.median(tps), 1) if tps else None,
            "tokens_per_s_per_log_line": tps, "mfu_percent": round(statistics.median(mfu), 2) if mfu else None,
            "wall_s": round(wall, 1), "wall_avg_tokens_per_s": round(total_tokens / wall, 1),
            "recompiles": trainer.recompiles,
            "notices": [x for x in log.splitlines() if x.startswith(("cuda defaults", "torch.compile", "warning"))]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "npu":
        return torch.npu.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["small", "base", "moe"],
                   help="small = 26M (512/8), base = 104M (768/16), moe = 145M MoE (640/8), tiny = 64/2 (CPU checks)")
    p.add_argument("--compare-defaults", dest="compare", action="store_true",
                   help="each preset at MiniMind's flags, this repo's device defaults and the best settings")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   help="with --compare-defaults: which of the three settings to run")
    p.add_argument("--e2e", choices=["pretrain", "full_sft"],
                   help="run this stage script end to end (flags after -- go to it) instead of synthetic steps")
    p.add_argument("--device", default=None, help="npu / cuda / mps / cpu; default: auto-detect")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: the trainers' default for the device (bf16 CUDA, fp16 NPU, fp32 CPU)")
    p.add_argument("--batch_size", type=int, default=None, help="sequences per step (default 16 on GPU/NPU, 4 on CPU)")
    p.add_argument("--seq_len", type=int, default=None, help="tokens per sequence (default 512 on GPU/NPU, 256 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 20 on GPU/NPU, 3 on CPU)")
    p.add_argument("--warmup_steps", type=int, default=1, help="untimed steps before timing (the first is always)")
    p.add_argument("--use_compile", type=int, default=0, choices=[0, 1], help="torch.compile (CUDA only)")
    p.add_argument("--measure_peak", action="store_true", help="also report MFU against a measured bf16 matmul peak")
    return p


def run(args, stage_flags: list) -> None:
    """The measurements the flags ask for, one JSON line each; stage_flags go to the stage script with --e2e."""
    if args.e2e:
        print(json.dumps(e2e(args.e2e, stage_flags)), flush=True)
        return
    kind = detect_device_type(args.device)
    accelerated = kind in ("cuda", "npu")
    args.batch_size = args.batch_size or (16 if accelerated else 4)
    args.seq_len = args.seq_len or (512 if accelerated else 256)
    args.steps = args.steps or (20 if accelerated else 3)
    args.measured_peak = None
    if args.measure_peak and accelerated:
        device = init_distributed_mode(args.device, args.dtype).device
        args.measured_peak = measure_matmul_peak(device)
        print(json.dumps({"bench": "bf16_matmul_peak", "device_name": device_name(device),
                          "tflops": round(args.measured_peak / 1e12, 1)}), flush=True)
    with tempfile.TemporaryDirectory() as out_dir:  # the loop's final save goes here and is thrown away
        for preset in args.preset:
            if not args.compare:
                print(json.dumps(bench(preset, args, out_dir, args.batch_size, 1, args.seq_len,
                                       args.use_compile)), flush=True)
                continue
            for label in args.configs:
                batch, accumulation, seq_len, use_compile = CONFIGS[label]
                if not accelerated and label != "default":  # CPU: a quarter of the rows, same shape of run
                    batch = max(1, batch // 8)
                print(json.dumps(bench(preset, args, out_dir, batch, accumulation, seq_len, use_compile,
                                       label)), flush=True)

